//! The timeline: one self-contained HTML page (inline script and style, nothing fetched)
//! that draws a run over its scheduling steps and virtual time, a lane per client and
//! lanes for the request coroutines, so an interleaving can be seen.
//!
//! What it shows, and where it comes from:
//! - client lanes: each request sent (`->`), each reply (`<-`), flushes, Tversions, client
//!   resets, and for virtio clients the kicks and the device's interrupts (the world);
//! - coroutine lanes (one bar per request coroutine, packed into rows per client; other
//!   coroutines, such as the lock swarm's, below): its polls, its waits between a `Pending`
//!   poll and the wake-up, and who woke it, drawn as an arrow from the waker's lane — the
//!   hand-off of a `CoMutex`/`CoRwLock`/`CoQueue` or of the fid barrier shows up this way,
//!   since the locks themselves (in `co9p::co`) are not instrumented; yields (a coroutine
//!   that woke itself), virtual sleeps (filesystem latency), stalls until a flush, each
//!   filesystem call with its outcome and injected fault, cancellation by a flush, a
//!   Tversion or a reset (the executor and the fault hook);
//! - the failed check, as a red line where it was found.
//!
//! Hovering an item shows its decoded PDU or event. Events are watched, never hashed:
//! keeping them changes nothing in the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Who woke a coroutine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The coroutine being polled then (a lock or barrier hand-off, a queue, a latch).
    Task(u64),
    /// A virtual-time timer.
    Timer,
    /// The world, between steps (a flush, a reset, a reply read).
    World,
}

/// Why a poll returned `Pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pend {
    /// It woke itself first: a yield.
    Yield,
    /// It set a timer for this virtual time.
    Sleep(Duration),
    /// Anything else: a lock, a barrier, a queue, a stall, a latch.
    Wait,
}

/// One timeline event.
#[derive(Debug, Clone)]
pub enum Kind {
    Spawn {
        task: u64,
    },
    Poll {
        task: u64,
        /// Runnable coroutines it was chosen from.
        of: usize,
    },
    Pending {
        task: u64,
        how: Pend,
    },
    Done {
        task: u64,
    },
    Wake {
        task: u64,
        by: By,
    },
    /// Virtual time jumped to the next timer.
    Time,
    Send {
        req: usize,
        client: usize,
        text: String,
    },
    Reply {
        req: usize,
        client: usize,
        text: String,
    },
    /// A request cancelled: by a flush, a Tversion or a reset (`why`).
    Cancel {
        req: usize,
        why: &'static str,
    },
    Fs {
        op: String,
        outcome: String,
        /// `None`: done; `Some(true)`: a fault before the effect; `Some(false)`: after.
        fault: Option<bool>,
        ok: bool,
    },
    Latency {
        d: Duration,
    },
    Stall {
        op: String,
    },
    ShortIo {
        op: String,
    },
    Kick {
        dev: usize,
    },
    Irq {
        dev: usize,
    },
    Reset {
        client: usize,
    },
    Phase(&'static str),
    Failed {
        check: String,
        detail: String,
    },
}

/// An event, stamped with the scheduling step, the virtual time and the coroutine being
/// polled when it happened.
#[derive(Debug, Clone)]
pub struct Ev {
    pub step: u64,
    pub at: Duration,
    pub task: Option<u64>,
    pub kind: Kind,
}

/// A request of the run, as the timeline names it.
#[derive(Debug, Clone)]
pub struct TlReq {
    pub client: usize,
    pub task: Option<u64>,
    pub text: String,
}

/// Everything a timeline page draws.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub title: String,
    pub subtitle: Vec<String>,
    pub clients: usize,
    /// The virtio device of each client, if it is a guest on one.
    pub client_dev: Vec<Option<usize>>,
    pub reqs: Vec<TlReq>,
    /// Names of coroutines that run no request (the lock swarm's).
    pub named_tasks: BTreeMap<u64, String>,
    pub events: Vec<Ev>,
}

/// Most steps drawn: a longer run shows its last ones (where a failure is).
const MAX_STEPS: u64 = 30_000;

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

fn dur(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0".into()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

/// A drawn item: kind, lane, from, to (bars), other lane and position (arrows), class,
/// tooltip, label.
struct Item {
    shape: char, // 'b' bar, 'm' mark, 'a' arrow
    lane: usize,
    x0: f64,
    x1: f64,
    lane2: usize,
    class: &'static str,
    tip: String,
    label: String,
}

struct Lane {
    label: String,
    kind: &'static str,
}

struct Builder<'a> {
    tl: &'a Timeline,
    lanes: Vec<Lane>,
    items: Vec<Item>,
    /// Lane of each coroutine, and its open spans.
    task_lane: BTreeMap<u64, usize>,
    task_req: BTreeMap<u64, usize>,
    spawned: BTreeMap<u64, f64>,
    /// An open wait/sleep/yield span per coroutine: since, class, tip.
    open: BTreeMap<u64, (f64, &'static str, String)>,
    stalled: BTreeMap<u64, (f64, String)>,
    first: u64,
}

impl<'a> Builder<'a> {
    fn push(&mut self, shape: char, lane: usize, x0: f64, class: &'static str, tip: String) {
        self.items.push(Item {
            shape,
            lane,
            x0,
            x1: x0,
            lane2: lane,
            class,
            tip,
            label: String::new(),
        });
    }

    fn task_name(&self, t: u64) -> String {
        match self.task_req.get(&t) {
            Some(&r) => format!(
                "coroutine {t}: c{} {}",
                self.tl.reqs[r].client, self.tl.reqs[r].text
            ),
            None => match self.tl.named_tasks.get(&t) {
                Some(n) => format!("coroutine {t} ({n})"),
                None => format!("coroutine {t}"),
            },
        }
    }

    fn close_span(&mut self, t: u64, x: f64) {
        if let Some((since, class, tip)) = self.open.remove(&t)
            && let Some(&lane) = self.task_lane.get(&t)
        {
            self.items.push(Item {
                shape: 'b',
                lane,
                x0: since,
                x1: x,
                lane2: lane,
                class,
                tip,
                label: String::new(),
            });
        }
    }
}

/// Positions of events on the x axis: the step, spread over the step's width when several
/// events share it (world events happen between steps).
fn positions(events: &[Ev]) -> Vec<f64> {
    let mut xs = vec![0.0; events.len()];
    let mut i = 0;
    while i < events.len() {
        let mut j = i;
        while j < events.len() && events[j].step == events[i].step {
            j += 1;
        }
        let n = (j - i) as f64;
        for (k, x) in xs[i..j].iter_mut().enumerate() {
            *x = events[i].step as f64 + 0.9 * k as f64 / n;
        }
        i = j;
    }
    xs
}

/// Lays the run out: lanes, bars, marks, arrows.
/// Lanes, items, time ticks, first and last step drawn.
type Layout = (Vec<Lane>, Vec<Item>, Vec<(f64, String)>, u64, u64);

fn build(tl: &Timeline) -> Layout {
    let last = tl.events.last().map_or(0, |e| e.step);
    let first = last.saturating_sub(MAX_STEPS);
    let events: Vec<Ev> = tl
        .events
        .iter()
        .filter(|e| e.step >= first)
        .cloned()
        .collect();
    let xs = positions(&events);
    let mut b = Builder {
        tl,
        lanes: Vec::new(),
        items: Vec::new(),
        task_lane: BTreeMap::new(),
        task_req: BTreeMap::new(),
        spawned: BTreeMap::new(),
        open: BTreeMap::new(),
        stalled: BTreeMap::new(),
        first,
    };
    for (r, q) in tl.reqs.iter().enumerate() {
        if let Some(t) = q.task {
            b.task_req.insert(t, r);
        }
    }
    // Lifetimes first, to pack coroutine bars into rows: per client, then the others.
    let mut life: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let end_x = xs.last().copied().unwrap_or(0.0) + 1.0;
    for (e, &x) in events.iter().zip(&xs) {
        match e.kind {
            Kind::Spawn { task } => {
                life.insert(task, (x, end_x));
            }
            Kind::Poll { task, .. } | Kind::Pending { task, .. } => {
                life.entry(task).or_insert((first as f64, end_x));
            }
            Kind::Done { task } => {
                life.entry(task).or_insert((first as f64, end_x)).1 = x;
            }
            _ => {}
        }
    }
    // Lanes: each client, then its request coroutines' rows; then the other coroutines.
    let groups = tl.clients + 1;
    let mut rows: Vec<Vec<Vec<(f64, f64)>>> = vec![Vec::new(); groups];
    let mut row_of: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for (&t, &(a, z)) in &life {
        let g = b
            .task_req
            .get(&t)
            .map_or(tl.clients, |&r| tl.reqs[r].client);
        let g = g.min(tl.clients);
        let rs = &mut rows[g];
        let row = match rs
            .iter()
            .position(|r| r.last().is_none_or(|&(_, end)| end + 2.0 < a))
        {
            Some(i) => i,
            None => {
                rs.push(Vec::new());
                rs.len() - 1
            }
        };
        rs[row].push((a, z));
        row_of.insert(t, (g, row));
    }
    let mut client_lane = Vec::new();
    let mut row_lane: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for g in 0..groups {
        if g < tl.clients {
            let how = match tl.client_dev.get(g).copied().flatten() {
                Some(d) => format!(" (virtio dev {d})"),
                None => " (direct)".into(),
            };
            client_lane.push(b.lanes.len());
            b.lanes.push(Lane {
                label: format!("client c{g}{how}"),
                kind: "client",
            });
        }
        for r in 0..rows[g].len() {
            row_lane[g].push(b.lanes.len());
            b.lanes.push(Lane {
                label: if g < tl.clients {
                    format!("  c{g} requests {}", r + 1)
                } else {
                    format!("other coroutines {}", r + 1)
                },
                kind: if g < tl.clients { "req" } else { "other" },
            });
        }
    }
    for (&t, &(g, r)) in &row_of {
        b.task_lane.insert(t, row_lane[g][r]);
    }
    let world_lane = b.lanes.len();
    b.lanes.push(Lane {
        label: "world".into(),
        kind: "world",
    });
    let lane_of_client = |c: usize| client_lane.get(c).copied().unwrap_or(world_lane);
    // Lifetime bars, labelled with the request.
    for (&t, &(a, z)) in &life {
        let lane = b.task_lane[&t];
        let label = match b.task_req.get(&t) {
            Some(&r) => tl.reqs[r].text.clone(),
            None => tl.named_tasks.get(&t).cloned().unwrap_or_default(),
        };
        let tip = b.task_name(t);
        b.items.push(Item {
            shape: 'b',
            lane,
            x0: a,
            x1: z,
            lane2: lane,
            class: "life",
            tip,
            label,
        });
    }
    let mut ticks = Vec::new();
    let mut sends: BTreeMap<usize, (usize, f64)> = BTreeMap::new();
    for (e, &x) in events.iter().zip(&xs) {
        let at = dur(e.at);
        let cur = e.task.and_then(|t| b.task_lane.get(&t).copied());
        let stamp = format!("step {} · t={at}", e.step);
        match &e.kind {
            Kind::Spawn { task } => {
                b.spawned.insert(*task, x);
            }
            Kind::Poll { task, of } => {
                b.close_span(*task, x);
                if let Some(&lane) = b.task_lane.get(task) {
                    let tip = format!(
                        "{}\npolled, chosen of {of} runnable\n{stamp}",
                        b.task_name(*task)
                    );
                    b.push('m', lane, x, "poll", tip);
                }
            }
            Kind::Pending { task, how } => {
                let (class, what) = match how {
                    Pend::Yield => ("yield", "yields".to_string()),
                    Pend::Sleep(until) => (
                        "sleep",
                        format!("sleeps until t={} (filesystem latency)", dur(*until)),
                    ),
                    Pend::Wait => (
                        "wait",
                        "waits (a lock, the fid barrier, a queue, a latch or a stall)".to_string(),
                    ),
                };
                let tip = format!("{}\n{what}\nfrom {stamp}", b.task_name(*task));
                b.open.insert(*task, (x, class, tip));
            }
            Kind::Done { task } => {
                b.close_span(*task, x);
                if let Some((since, op)) = b.stalled.remove(task)
                    && let Some(&lane) = b.task_lane.get(task)
                {
                    b.items.push(Item {
                        shape: 'b',
                        lane,
                        x0: since,
                        x1: x,
                        lane2: lane,
                        class: "stall",
                        tip: format!("{}\nstalled in {op} until flushed", b.task_name(*task)),
                        label: String::new(),
                    });
                }
            }
            Kind::Wake { task, by } => {
                let Some(&to) = b.task_lane.get(task) else {
                    continue;
                };
                match by {
                    By::Task(w) => {
                        if let Some(&from) = b.task_lane.get(w) {
                            let tip = format!(
                                "hand-off: {}\nwoke {}\n{stamp}",
                                b.task_name(*w),
                                b.task_name(*task)
                            );
                            b.items.push(Item {
                                shape: 'a',
                                lane: from,
                                x0: x,
                                x1: x + 0.9,
                                lane2: to,
                                class: "handoff",
                                tip,
                                label: String::new(),
                            });
                        }
                    }
                    By::Timer => {}
                    By::World => {
                        let tip = format!("{} woken by the world\n{stamp}", b.task_name(*task));
                        b.push('m', to, x, "wworld", tip);
                    }
                }
            }
            Kind::Time => ticks.push((x, at.clone())),
            Kind::Send { req, client, text } => {
                let lane = lane_of_client(*client);
                let class = if text.starts_with("Tflush") {
                    "flush"
                } else if text.starts_with("Tversion") {
                    "version"
                } else {
                    "send"
                };
                b.push('m', lane, x, class, format!("c{client} -> {text}\n{stamp}"));
                sends.insert(*req, (lane, x));
                if let Some(t) = tl.reqs.get(*req).and_then(|r| r.task)
                    && let Some(&to) = b.task_lane.get(&t)
                {
                    b.items.push(Item {
                        shape: 'a',
                        lane,
                        x0: x,
                        x1: x + 0.9,
                        lane2: to,
                        class: "sendarrow",
                        tip: format!("c{client} -> {text}"),
                        label: String::new(),
                    });
                }
            }
            Kind::Reply { req, client, text } => {
                let lane = lane_of_client(*client);
                let class = if text.starts_with("Rlerror") {
                    "rerror"
                } else {
                    "reply"
                };
                let sent = tl.reqs.get(*req).map(|r| r.text.as_str()).unwrap_or("");
                b.push(
                    'm',
                    lane,
                    x,
                    class,
                    format!("c{client} <- {text}\n(for {sent})\n{stamp}"),
                );
            }
            Kind::Cancel { req, why } => {
                let t = tl.reqs.get(*req).and_then(|r| r.task);
                let lane = t
                    .and_then(|t| b.task_lane.get(&t).copied())
                    .or_else(|| sends.get(req).map(|s| s.0))
                    .unwrap_or(world_lane);
                let text = tl.reqs.get(*req).map(|r| r.text.as_str()).unwrap_or("");
                b.push(
                    'm',
                    lane,
                    x,
                    "cancel",
                    format!("cancelled by {why}: {text}\n{stamp}"),
                );
            }
            Kind::Fs {
                op,
                outcome,
                fault,
                ok,
            } => {
                let class = match (fault, ok) {
                    (Some(true), _) => "fbefore",
                    (Some(false), _) => "fafter",
                    (None, true) => "fsok",
                    (None, false) => "fserr",
                };
                let who = e.task.map(|t| b.task_name(t)).unwrap_or_default();
                b.push(
                    'm',
                    cur.unwrap_or(world_lane),
                    x,
                    class,
                    format!("filesystem {op}: {outcome}\n{who}\n{stamp}"),
                );
            }
            Kind::Latency { d } => {
                let who = e.task.map(|t| b.task_name(t)).unwrap_or_default();
                b.push(
                    'm',
                    cur.unwrap_or(world_lane),
                    x,
                    "latency",
                    format!("filesystem latency {}\n{who}\n{stamp}", dur(*d)),
                );
            }
            Kind::Stall { op } => {
                if let Some(t) = e.task {
                    b.stalled.insert(t, (x, op.clone()));
                }
            }
            Kind::ShortIo { op } => {
                let who = e.task.map(|t| b.task_name(t)).unwrap_or_default();
                b.push(
                    'm',
                    cur.unwrap_or(world_lane),
                    x,
                    "shortio",
                    format!("short {op} (fewer bytes than asked)\n{who}\n{stamp}"),
                );
            }
            Kind::Kick { dev } => {
                let c = (0..tl.clients).find(|&c| tl.client_dev.get(c) == Some(&Some(*dev)));
                let lane = c.map_or(world_lane, lane_of_client);
                b.push(
                    'm',
                    lane,
                    x,
                    "kick",
                    format!("virtio dev {dev}: kick (queue notify)\n{stamp}"),
                );
            }
            Kind::Irq { dev } => {
                let c = (0..tl.clients).find(|&c| tl.client_dev.get(c) == Some(&Some(*dev)));
                let lane = c.map_or(world_lane, lane_of_client);
                b.push(
                    'm',
                    lane,
                    x,
                    "irq",
                    format!("virtio dev {dev}: interrupt (used ring read)\n{stamp}"),
                );
            }
            Kind::Reset { client } => {
                let lane = lane_of_client(*client);
                b.push(
                    'm',
                    lane,
                    x,
                    "reset",
                    format!("c{client} resets its connection\n{stamp}"),
                );
            }
            Kind::Phase(p) => {
                b.push('m', world_lane, x, "phase", format!("phase: {p}\n{stamp}"));
                b.items.last_mut().expect("pushed").label = (*p).to_string();
            }
            Kind::Failed { check, detail } => {
                b.push(
                    'm',
                    world_lane,
                    x,
                    "failed",
                    format!("FAILED {check}: {detail}\n{stamp}"),
                );
                b.items.last_mut().expect("pushed").label = format!("FAILED {check}");
            }
        }
    }
    // Spans still open at the end (blocked for good, or cut off by the failure).
    let open: Vec<u64> = b.open.keys().copied().collect();
    for t in open {
        b.close_span(t, end_x);
    }
    let stalled: Vec<(u64, (f64, String))> = std::mem::take(&mut b.stalled).into_iter().collect();
    for (t, (since, op)) in stalled {
        if let Some(&lane) = b.task_lane.get(&t) {
            let tip = format!("{}\nstalled in {op} until flushed", b.task_name(t));
            b.items.push(Item {
                shape: 'b',
                lane,
                x0: since,
                x1: end_x,
                lane2: lane,
                class: "stall",
                tip,
                label: String::new(),
            });
        }
    }
    (b.lanes, b.items, ticks, b.first, last + 1)
}

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
