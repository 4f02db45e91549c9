//! The timeline's layout: a run's events laid out on lanes (a lane per client, rows of
//! request coroutines, other coroutines below) as bars, marks and arrows over the
//! scheduling steps, each with its tooltip — everything the page draws, as data.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{By, Ev, Kind, Pend, Timeline};

/// Most steps drawn: a longer run shows its last ones (where a failure is).
const MAX_STEPS: u64 = 30_000;

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
pub(super) struct Item {
    pub(super) shape: char, // 'b' bar, 'm' mark, 'a' arrow
    pub(super) lane: usize,
    pub(super) x0: f64,
    pub(super) x1: f64,
    pub(super) lane2: usize,
    pub(super) class: &'static str,
    pub(super) tip: String,
    pub(super) label: String,
}

pub(super) struct Lane {
    pub(super) label: String,
    pub(super) kind: &'static str,
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
pub(super) type Layout = (Vec<Lane>, Vec<Item>, Vec<(f64, String)>, u64, u64);

pub(super) fn build(tl: &Timeline) -> Layout {
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
