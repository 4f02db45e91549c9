//! A run's workload as a list of moves, and the repro file that holds a whole run.
//!
//! A run records its workload phase as moves: scheduling steps, and what each client did
//! (set up, send a request, flush, Tversion, reset). Replaying the moves of a run gives the
//! same run, bit for bit (the same hash): the moves carry every draw of the workload stream,
//! and the other streams (scheduler, filesystem, faults, link) are drawn as before. A
//! subset of the moves is still a run (a move that no longer fits is skipped): shrinking
//! deletes moves and keeps the deletions after which the same check still fails.
//!
//! A repro file is the run's configuration and its moves, as text:
//!
//! ```text
//! seed 32
//! clients 1
//! scheduler random
//! transport direct
//! clunk pipelined
//! off latency,stall
//! moves 3
//! setup c0
//! steps 4
//! send c0 x=17 p=1 msg=1f0000006e... # Twalk tag=0 fid=1 newfid=17 wnames=["a"]
//! ```

use std::sync::Arc;

use co9p::protocol::{Request, Tag, Tmessage};

use crate::guest::Uses;
use crate::knobs::{off_list, parse_off};
use crate::link::Transport;
use crate::world::{FsChoice, Plant, RunConfig, Scheduler};

/// What a flush of a recorded move aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Its own tag.
    Own,
    /// The request that move `n` sent (skipped if it is no longer in flight).
    Move(usize),
    /// A tag that named no request of the script (unknown, or finished).
    Tag(u16),
}

/// One move of the workload phase.
#[derive(Debug, Clone)]
pub enum Move {
    /// Up to this many scheduling steps.
    Steps(u64),
    /// Client `c` sends its next setup request (Tversion, Tattach, the two walks).
    Setup(usize),
    /// Client `c` sends a workload request (its tag is chosen when sent).
    Send {
        client: usize,
        msg: Tmessage,
        uses: Uses,
    },
    Flush {
        client: usize,
        target: Target,
    },
    Version(usize),
    Reset(usize),
    /// Client `c` sends a hostile request, drawn from the hostile stream at word `at`.
    Hostile {
        client: usize,
        at: u128,
    },
    /// HostFs closes every idle descriptor (reopened by name when next used).
    Reclaim,
    /// The virtio guests' drivers may kick their devices and handle their interrupts.
    Virtio,
}

impl Move {
    pub fn client(&self) -> Option<usize> {
        match *self {
            Move::Steps(_) | Move::Reclaim | Move::Virtio => None,
            Move::Setup(c)
            | Move::Send { client: c, .. }
            | Move::Flush { client: c, .. }
            | Move::Version(c)
            | Move::Reset(c)
            | Move::Hostile { client: c, .. } => Some(c),
        }
    }

    /// Whether the move is a workload request (what `--ops` counts).
    pub fn is_send(&self) -> bool {
        matches!(self, Move::Send { .. })
    }
}

/// The moves kept by `keep` (same length as `moves`), flush targets renumbered; a flush
/// of a deleted move goes too (it would be skipped).
pub fn subset(moves: &[Move], keep: &[bool]) -> Vec<Move> {
    let target = |m: &Move| match m {
        Move::Flush {
            target: Target::Move(k),
            ..
        } => Some(*k),
        _ => None,
    };
    let mut keep = keep.to_vec();
    // Targets come before their flushes: one pass in order drops flushes of flushes too.
    for i in 0..moves.len() {
        if keep[i] && target(&moves[i]).is_some_and(|k| !keep[k]) {
            keep[i] = false;
        }
    }
    let mut index = vec![0; moves.len()];
    let mut n = 0;
    for (i, k) in keep.iter().enumerate() {
        index[i] = n;
        n += usize::from(*k);
    }
    moves
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(m, _)| match (m, target(m)) {
            (Move::Flush { client, .. }, Some(k)) => Move::Flush {
                client: *client,
                target: Target::Move(index[k]),
            },
            _ => m.clone(),
        })
        .collect()
}

fn ids(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// One move as a line of a repro file.
pub fn move_line(m: &Move) -> String {
    match m {
        Move::Steps(n) => format!("steps {n}"),
        Move::Setup(c) => format!("setup c{c}"),
        Move::Version(c) => format!("version c{c}"),
        Move::Reset(c) => format!("reset c{c}"),
        Move::Hostile { client, at } => format!("hostile c{client} at={at}"),
        Move::Reclaim => "reclaim".to_string(),
        Move::Virtio => "virtio".to_string(),
        Move::Flush { client, target } => match target {
            Target::Own => format!("flush c{client} own"),
            Target::Move(k) => format!("flush c{client} move={k}"),
            Target::Tag(t) => format!("flush c{client} tag={t}"),
        },
        Move::Send { client, msg, uses } => {
            let req = Request::new(Tag(0), msg.clone());
            let bytes = req.to_bytes().unwrap_or_default();
            let mut s = format!("send c{client}");
            for (k, v) in [
                ("p", &uses.primary),
                ("s", &uses.secondary),
                ("x", &uses.exclusive),
                ("c", &uses.closing),
            ] {
                if !v.is_empty() {
                    s.push_str(&format!(" {k}={}", ids(v)));
                }
            }
            // The tag is chosen when the request is sent: the comment shows the message.
            let shown = req.to_string();
            let shown = shown.replacen(" tag=0", "", 1);
            s.push_str(&format!(" msg={} # {shown}", hex(&bytes)));
            s
        }
    }
}

fn client(tok: Option<&str>) -> Result<usize, String> {
    let t = tok.ok_or("a client (cN) is missing")?;
    t.strip_prefix('c')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{t:?} is not a client (cN)"))
}

fn parse_ids(s: &str) -> Result<Vec<u32>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|x| x.parse().map_err(|_| format!("{x:?} is not a fid")))
        .collect()
}

/// Parses one move line (comments already removed).
pub fn parse_move(line: &str) -> Result<Move, String> {
    let mut t = line.split_whitespace();
    let verb = t.next().ok_or("an empty move")?;
    let m = match verb {
        "steps" => Move::Steps(
            t.next()
                .and_then(|n| n.parse().ok())
                .ok_or("steps needs a count")?,
        ),
        "setup" => Move::Setup(client(t.next())?),
        "version" => Move::Version(client(t.next())?),
        "reset" => Move::Reset(client(t.next())?),
        "reclaim" => Move::Reclaim,
        "virtio" => Move::Virtio,
        "hostile" => {
            let c = client(t.next())?;
            let at = t
                .next()
                .and_then(|x| x.strip_prefix("at="))
                .and_then(|x| x.parse().ok())
                .ok_or("hostile needs at=N")?;
            Move::Hostile { client: c, at }
        }
        "flush" => {
            let c = client(t.next())?;
            let target = match t.next() {
                Some("own") => Target::Own,
                Some(x) if x.starts_with("move=") => {
                    Target::Move(x[5..].parse().map_err(|_| format!("bad target {x:?}"))?)
                }
                Some(x) if x.starts_with("tag=") => {
                    Target::Tag(x[4..].parse().map_err(|_| format!("bad target {x:?}"))?)
                }
                x => return Err(format!("bad flush target {x:?}")),
            };
            Move::Flush { client: c, target }
        }
        "send" => {
            let c = client(t.next())?;
            let mut uses = Uses::default();
            let mut msg = None;
            for tok in t.by_ref() {
                let (k, v) = tok
                    .split_once('=')
                    .ok_or_else(|| format!("{tok:?} is not key=value"))?;
                match k {
                    "p" => uses.primary = parse_ids(v)?,
                    "s" => uses.secondary = parse_ids(v)?,
                    "x" => uses.exclusive = parse_ids(v)?,
                    "c" => uses.closing = parse_ids(v)?,
                    "msg" => {
                        let bytes = unhex(v)?;
                        let req = Request::decode(&bytes, u32::MAX)
                            .map_err(|e| format!("msg does not decode: {e}"))?;
                        msg = Some(req.msg);
                    }
                    _ => return Err(format!("unknown key {k:?}")),
                }
            }
            Move::Send {
                client: c,
                msg: msg.ok_or("send needs msg=")?,
                uses,
            }
        }
        _ => return Err(format!("unknown move {verb:?}")),
    };
    if let Some(extra) = t.next() {
        return Err(format!("unexpected {extra:?}"));
    }
    Ok(m)
}

/// The text of a repro file for `cfg` (its script, if any, as its moves).
pub fn repro_text(cfg: &RunConfig, header: &[String]) -> String {
    let mut s = String::from("# co9p-sim repro file: replay with `co9p-sim run --replay FILE`\n");
    for h in header {
        s.push_str(&format!("# {h}\n"));
    }
    s.push_str(&format!("seed {}\n", cfg.seed));
    s.push_str(&format!("clients {}\n", cfg.clients));
    if cfg.script.is_none() {
        s.push_str(&format!("ops {}\n", cfg.ops));
    }
    s.push_str(&format!("scheduler {}\n", cfg.scheduler.name()));
    s.push_str(&format!("transport {}\n", cfg.transport.name()));
    s.push_str(&format!(
        "clunk {}\n",
        if cfg.pipelined_clunk {
            "pipelined"
        } else {
            "serial"
        }
    ));
    s.push_str(match cfg.fs {
        FsChoice::Mem => "fs mem\n",
        FsChoice::Host => "fs host\n",
        FsChoice::Swarm => "fs swarm\n",
    });
    for k in &cfg.force {
        s.push_str(&format!("knob {k}\n"));
    }
    s.push_str(&format!("off {}\n", off_list(&cfg.off)));
    if let Some(p) = cfg.plant {
        s.push_str(&format!("plant {}\n", p.name()));
    }
    if let Some(script) = &cfg.script {
        s.push_str(&format!("moves {}\n", script.len()));
        for m in script.iter() {
            s.push_str(&move_line(m));
            s.push('\n');
        }
    }
    s
}

/// Reads a repro file back.
pub fn parse_repro(text: &str) -> Result<RunConfig, String> {
    let mut cfg = RunConfig::new(0);
    let mut seed = None;
    let mut moves: Option<(usize, Vec<Move>)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", n + 1);
        if let Some((_, v)) = &mut moves {
            v.push(parse_move(line).map_err(at)?);
            continue;
        }
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        let v = v.trim();
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| at(format!("{v:?} is not a number")))
        };
        match k {
            "seed" => seed = Some(num(v)?),
            "clients" => cfg.clients = num(v)? as usize,
            "ops" => cfg.ops = num(v)?,
            "scheduler" => cfg.scheduler = Scheduler::from_name(v).ok_or_else(|| at(v.into()))?,
            "transport" => cfg.transport = Transport::from_name(v).ok_or_else(|| at(v.into()))?,
            "clunk" => {
                cfg.pipelined_clunk = match v {
                    "pipelined" => true,
                    "serial" => false,
                    _ => return Err(at(format!("clunk {v:?}"))),
                }
            }
            "off" => cfg.off = parse_off(v).map_err(at)?,
            "fs" => {
                cfg.fs = match v {
                    "mem" => FsChoice::Mem,
                    "host" => FsChoice::Host,
                    "swarm" => FsChoice::Swarm,
                    _ => return Err(at(format!("fs {v:?}"))),
                }
            }
            "knob" => {
                if !crate::world::KNOBS.contains(&v) {
                    return Err(at(format!("no knob {v:?}")));
                }
                cfg.force.push(v.to_string());
            }
            "plant" => cfg.plant = Some(Plant::from_name(v).ok_or_else(|| at(v.into()))?),
            "moves" => moves = Some((num(v)? as usize, Vec::new())),
            _ => return Err(at(format!("unknown setting {k:?}"))),
        }
    }
    cfg.seed = seed.ok_or("the file names no seed")?;
    if let Some((want, v)) = moves {
        if v.len() != want {
            return Err(format!("{} moves, the file says {want}", v.len()));
        }
        cfg.script = Some(Arc::new(v));
    }
    Ok(cfg)
}
