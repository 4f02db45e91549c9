//! The timeline's page: the layout as a JSON literal in one self-contained HTML page (the
//! drawing script and style inline, nothing fetched).

use std::fmt::Write as _;

use super::Timeline;
use super::layout::build;

/// The page.
pub fn render_html(tl: &Timeline) -> String {
    let (lanes, items, ticks, first, end) = build(tl);
    let mut data = String::from("{\"lanes\":[");
    for (i, l) in lanes.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        let _ = write!(data, "[{},{}]", js_str(&l.label), js_str(l.kind));
    }
    data.push_str("],\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        let _ = write!(
            data,
            "[{},{},{:.3},{:.3},{},{},{},{}]",
            js_str(&it.shape.to_string()),
            it.lane,
            it.x0,
            it.x1,
            it.lane2,
            js_str(it.class),
            js_str(&it.tip),
            js_str(&it.label)
        );
    }
    data.push_str("],\"ticks\":[");
    for (i, (x, t)) in ticks.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        let _ = write!(data, "[{x:.3},{}]", js_str(t));
    }
    let _ = write!(data, "],\"first\":{first},\"end\":{end}}}");
    let sub: String = tl
        .subtitle
        .iter()
        .map(|s| format!("<div class=\"sub\">{}</div>", html_esc(s)))
        .collect();
    PAGE.replace("@TITLE@", &html_esc(&tl.title))
        .replace("@SUB@", &sub)
        .replace("@DATA@", &data)
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>@TITLE@</title>
<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));document.documentElement.setAttribute('data-errors',window.__errors.join(' | '));});</script>
<style>
body{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;margin:0;background:#fafafa;color:#222}
header{padding:8px 12px;background:#fff;border-bottom:1px solid #ddd}
h1{font-size:15px;margin:0 0 4px}
.sub{color:#555;white-space:pre-wrap}
#bar{padding:6px 12px;display:flex;gap:8px;align-items:center;flex-wrap:wrap;border-bottom:1px solid #ddd;background:#fff}
#bar button{font:inherit}
.key{display:inline-flex;align-items:center;gap:3px;margin-right:6px}
.sw{display:inline-block;width:12px;height:10px;border:1px solid #999}
#wrap{position:relative;overflow:auto;height:calc(100vh - 150px);min-height:300px}
#grid{display:flex;align-items:flex-start}
#labels{position:sticky;left:0;z-index:2;background:#fff;border-right:1px solid #ccc;min-width:210px}
.lane-label{height:20px;line-height:20px;padding:0 6px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:260px;border-bottom:1px solid #f0f0f0}
.lane-label.client{font-weight:bold;background:#eef4ff}
.lane-label.world{font-weight:bold;background:#f5f5f5}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:6px 8px;border-radius:4px;white-space:pre-wrap;max-width:760px;display:none;z-index:10;font-size:12px}
svg text{font:10px ui-monospace,Menlo,Consolas,monospace;pointer-events:none}
.life{fill:#dfe8f3;stroke:#9fb3cc}
.wait{fill:#f4b6b6}.sleep{fill:#f7dc8f}.yield{fill:#cfe9c9}.stall{fill:#d9a0e8}
.poll{stroke:#2f6db5;stroke-width:1.5}
.send{fill:#1f77b4}.flush{fill:#ff7f0e}.version{fill:#8c564b}.reply{fill:#2ca02c}.rerror{fill:#d62728}
.cancel{fill:#000}.fsok{fill:#17becf}.fserr{fill:#9467bd}.fbefore{fill:#d62728}.fafter{fill:#e377c2}
.latency{fill:#bcbd22}.shortio{fill:#7f7f7f}.kick{fill:#393b79}.irq{fill:#637939}.reset{fill:#000}
.wworld{fill:#aaa}
.handoff{stroke:#c0392b;fill:none;stroke-width:1.2;marker-end:url(#ah)}
.sendarrow{stroke:#1f77b4;fill:none;stroke-dasharray:2 2;opacity:.5}
.phase{stroke:#888;stroke-dasharray:4 3}
.failed{stroke:#e00;stroke-width:2.5}
.hit:hover{stroke:#000;stroke-width:2}
</style></head><body>
<header><h1>@TITLE@</h1>@SUB@</header>
<div id="bar">
<button id="zin">zoom +</button><button id="zout">zoom &minus;</button><button id="fit">fit</button>
<label><input type="checkbox" id="polls" checked> polls</label>
<label><input type="checkbox" id="arrows" checked> hand-offs</label>
<span id="info"></span>
<span class="key"><span class="sw" style="background:#1f77b4"></span>-&gt; T</span>
<span class="key"><span class="sw" style="background:#2ca02c"></span>&lt;- R</span>
<span class="key"><span class="sw" style="background:#d62728"></span>Rlerror / fault before</span>
<span class="key"><span class="sw" style="background:#e377c2"></span>fault after</span>
<span class="key"><span class="sw" style="background:#ff7f0e"></span>Tflush</span>
<span class="key"><span class="sw" style="background:#000"></span>cancel/reset</span>
<span class="key"><span class="sw" style="background:#17becf"></span>fs call</span>
<span class="key"><span class="sw" style="background:#bcbd22"></span>latency</span>
<span class="key"><span class="sw" style="background:#393b79"></span>kick</span>
<span class="key"><span class="sw" style="background:#637939"></span>irq</span>
<span class="key"><span class="sw" style="background:#dfe8f3"></span>coroutine</span>
<span class="key"><span class="sw" style="background:#f4b6b6"></span>waiting</span>
<span class="key"><span class="sw" style="background:#f7dc8f"></span>sleeping</span>
<span class="key"><span class="sw" style="background:#cfe9c9"></span>yield</span>
<span class="key"><span class="sw" style="background:#d9a0e8"></span>stalled</span>
<span class="key"><span class="sw" style="border-color:#c0392b;background:#fff"></span>&rarr; woke (hand-off)</span>
</div>
<div id="wrap"><div id="grid"><div id="labels"></div><div id="chart"></div></div></div>
<div id="tip"></div>
<script>
"use strict";
const D = @DATA@;
const LH = 20, TOP = 24;
let px = 0;
function fitPx(){const w=Math.max(600,document.getElementById('wrap').clientWidth-520);return Math.max(0.05,Math.min(24,w/Math.max(1,D.end-D.first)));}
function X(x){return ((x-D.first)*px).toFixed(1);}
function Y(l){return TOP+l*LH;}
function render(){
  const showPolls=document.getElementById('polls').checked, showArrows=document.getElementById('arrows').checked;
  const W=Math.ceil((D.end-D.first)*px)+260, H=TOP+D.lanes.length*LH+4;
  const o=[];
  o.push('<svg xmlns="http://www.w3.org/2000/svg" width="'+W+'" height="'+H+'"><defs><marker id="ah" viewBox="0 0 6 6" refX="5" refY="3" markerWidth="5" markerHeight="5" orient="auto"><path d="M0,0L6,3L0,6z" fill="#c0392b"/></marker></defs>');
  for(let l=0;l<D.lanes.length;l++){const k=D.lanes[l][1];o.push('<rect x="0" y="'+Y(l)+'" width="'+W+'" height="'+LH+'" fill="'+(k==='client'?'#eef4ff':(l%2?'#fff':'#fbfbfb'))+'"/>');}
  let step=Math.max(1,Math.pow(10,Math.ceil(Math.log10(60/px))));
  for(let s=Math.ceil(D.first/step)*step;s<D.end;s+=step){o.push('<line x1="'+X(s)+'" x2="'+X(s)+'" y1="'+(TOP-6)+'" y2="'+H+'" stroke="#eee"/><text x="'+(+X(s)+2)+'" y="10" fill="#888">#'+s+'</text>');}
  let lastT=-1e9;
  for(const t of D.ticks){if((t[0]-lastT)*px<70)continue;lastT=t[0];o.push('<line x1="'+X(t[0])+'" x2="'+X(t[0])+'" y1="12" y2="'+TOP+'" stroke="#bcbd22"/><text x="'+(+X(t[0])+2)+'" y="20" fill="#8a8a00">t='+t[1]+'</text>');}
  D.items.forEach(function(it,i){
    const [s,l,x0,x1,l2,c,,label]=it;
    if(s==='b'){const w=Math.max(1,(x1-x0)*px);const h=c==='life'?LH-4:LH-10;const y=c==='life'?Y(l)+2:Y(l)+5;
      o.push('<rect class="'+c+' hit" data-i="'+i+'" x="'+X(x0)+'" y="'+y+'" width="'+w.toFixed(1)+'" height="'+h+'"'+(c==='life'?' rx="3"':'')+'/>');
      if(label&&w>30){o.push('<text x="'+(+X(x0)+3)+'" y="'+(Y(l)+14)+'" fill="#234">'+esc(label.slice(0,Math.floor(w/6)))+'</text>');}}
    else if(s==='a'){if(!showArrows)return;o.push('<path class="'+c+' hit" data-i="'+i+'" d="M'+X(x0)+','+(Y(l)+LH/2)+' L'+X(x1)+','+(Y(l2)+LH/2)+'"/>');}
    else if(c==='poll'){if(!showPolls)return;o.push('<line class="poll hit" data-i="'+i+'" x1="'+X(x0)+'" x2="'+X(x0)+'" y1="'+(Y(l)+2)+'" y2="'+(Y(l)+LH-2)+'"/>');}
    else if(c==='phase'||c==='failed'){o.push('<line class="'+c+' hit" data-i="'+i+'" x1="'+X(x0)+'" x2="'+X(x0)+'" y1="'+TOP+'" y2="'+H+'"/><text x="'+(+X(x0)+3)+'" y="'+(Y(l)+13)+'" fill="'+(c==='failed'?'#e00':'#555')+'">'+esc(label)+'</text>');}
    else {const r=(c==='send'||c==='reply'||c==='rerror'||c==='flush'||c==='version')?4:3.2;
      if(c==='send'||c==='flush'||c==='version'){o.push('<path class="'+c+' hit" data-i="'+i+'" d="M'+(+X(x0)-r)+','+(Y(l)+LH/2-r)+' L'+(+X(x0)+r)+','+(Y(l)+LH/2)+' L'+(+X(x0)-r)+','+(Y(l)+LH/2+r)+'z"/>');}
      else if(c==='reply'||c==='rerror'){o.push('<path class="'+c+' hit" data-i="'+i+'" d="M'+(+X(x0)+r)+','+(Y(l)+LH/2-r)+' L'+(+X(x0)-r)+','+(Y(l)+LH/2)+' L'+(+X(x0)+r)+','+(Y(l)+LH/2+r)+'z"/>');}
      else {o.push('<circle class="'+c+' hit" data-i="'+i+'" cx="'+X(x0)+'" cy="'+(Y(l)+LH/2)+'" r="'+r+'"/>');}}
  });
  o.push('</svg>');
  document.getElementById('chart').innerHTML=o.join('');
  document.getElementById('info').textContent='steps '+D.first+'..'+D.end+' · '+D.lanes.length+' lanes · '+D.items.length+' items';
}
function esc(s){return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;');}
function labels(){const o=['<div style="height:'+TOP+'px;border-bottom:1px solid #ddd"></div>'];
  for(const l of D.lanes){o.push('<div class="lane-label '+l[1]+'" title="'+esc(l[0])+'">'+esc(l[0])+'</div>');}
  document.getElementById('labels').innerHTML=o.join('');}
const tip=document.getElementById('tip');
document.getElementById('chart').addEventListener('mousemove',function(e){const i=e.target.getAttribute&&e.target.getAttribute('data-i');
  if(i===null||i===undefined){tip.style.display='none';return;}
  tip.textContent=D.items[+i][6];tip.style.display='block';
  tip.style.left=Math.min(e.clientX+14,window.innerWidth-780)+'px';tip.style.top=(e.clientY+14)+'px';});
document.getElementById('chart').addEventListener('mouseleave',function(){tip.style.display='none';});
document.getElementById('zin').onclick=function(){px*=1.6;render();};
document.getElementById('zout').onclick=function(){px/=1.6;render();};
document.getElementById('fit').onclick=function(){px=fitPx();render();};
document.getElementById('polls').onchange=render;
document.getElementById('arrows').onchange=render;
labels();px=fitPx();render();
const fail=D.items.find(function(it){return it[5]==='failed';});
if(fail){const w=document.getElementById('wrap');w.scrollLeft=Math.max(0,(fail[2]-D.first)*px-w.clientWidth*0.6);}
document.body.setAttribute('data-lanes',String(D.lanes.length));
document.body.setAttribute('data-ready','1');
</script>
</body></html>
"##;

fn js_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '<' => o.push_str("\\u003c"),
            '>' => o.push_str("\\u003e"),
            '&' => o.push_str("\\u0026"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn html_esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
