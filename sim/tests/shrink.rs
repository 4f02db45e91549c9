//! Recording and replaying a workload, shrinking, and parallel campaigns.
//!
//! The planted bug (Tclunk no longer waiting for earlier requests on its fid) comes through
//! the device's test-only hook: this crate's tests build `co9p` with `planted-bugs`;
//! production builds do not have it.

use co9p_sim::campaign::{SeedResult, campaign, shrink};
use co9p_sim::link::Transport;
use co9p_sim::script::{parse_repro, repro_text};
use co9p_sim::world::{FsChoice, Plant, RunConfig, Scheduler, World};

/// The first failing seed of a campaign with the planted clunk bug.
fn planted_failure() -> (RunConfig, co9p_sim::world::Report) {
    let cfg_of = |seed| RunConfig {
        plant: Some(Plant::ClunkSkipsBarrier),
        ..RunConfig::new(seed)
    };
    let mut found = None;
    campaign(0, 500, 2, false, false, &cfg_of, &mut |r: SeedResult| {
        if r.report.failure.is_some() {
            found = Some((r.cfg, r.report));
        }
    });
    found.expect("the planted bug is found within 500 seeds")
}

#[test]
fn replaying_a_recorded_workload_gives_the_same_run_bit_for_bit() {
    for seed in 0..24u64 {
        let mut cfg = RunConfig::new(900 + seed);
        cfg.transport = [Transport::Direct, Transport::Virtio, Transport::Swarm][seed as usize % 3];
        if seed % 4 == 3 {
            cfg.scheduler = Scheduler::Pct;
        }
        // Hostile clients and HostFs descriptor reclaim are moves too.
        if seed % 3 == 1 {
            cfg.force = vec!["hostile".into(), "reclaim".into()];
            cfg.fs = FsChoice::Host;
        }
        let rec = World::run(RunConfig {
            record: true,
            ..cfg.clone()
        });
        assert!(rec.failure.is_none(), "{:?}", rec.failure);
        let replay = RunConfig {
            script: Some(std::sync::Arc::new(rec.moves.clone())),
            ..cfg.clone()
        };
        // Through the repro file's text, as `--replay` reads it.
        let back = parse_repro(&repro_text(&replay, &[])).expect("parses");
        let r = World::run(back);
        assert_eq!(
            (r.hash, r.steps, r.requests),
            (rec.hash, rec.steps, rec.requests),
            "seed {}",
            cfg.seed
        );
    }
}

#[test]
fn the_shrunk_run_is_smaller_and_fails_the_same_check() {
    let (cfg, failed) = planted_failure();
    let check = failed.failure.as_ref().unwrap().check;
    let s = shrink(&cfg, &failed, 250, 2);
    assert!(
        s.after.requests < s.before.requests && s.after.steps < s.before.steps,
        "{} -> {}",
        s.before,
        s.after
    );
    assert!(s.after.clients <= s.before.clients);
    assert_eq!(s.report.failure.as_ref().map(|f| f.check), Some(check));
    // Its repro file replays it exactly, failing the same check.
    let back = parse_repro(&repro_text(&s.cfg, &[])).expect("parses");
    let r = World::run(back);
    assert_eq!((r.hash, r.steps), (s.report.hash, s.report.steps));
    assert_eq!(r.failure.map(|f| f.check), Some(check));
    // Deterministic, whatever the number of threads.
    let again = shrink(&cfg, &failed, 250, 1);
    assert_eq!(again.report.hash, s.report.hash);
    assert_eq!(again.runs, s.runs);
}

#[test]
fn campaigns_give_the_same_results_on_one_thread_or_several() {
    let results = |jobs: usize, plant: Option<Plant>| {
        let cfg_of = |seed| RunConfig {
            plant,
            ops: 40,
            ..RunConfig::new(seed)
        };
        let mut lines = Vec::new();
        let n = campaign(0, 60, jobs, false, false, &cfg_of, &mut |r: SeedResult| {
            lines.push(format!("{} {:?}", r.report.line(), r.failure()));
        });
        assert_eq!(n as usize, lines.len());
        lines
    };
    assert_eq!(results(1, None), results(3, None));
    let one = results(1, Some(Plant::ClunkSkipsBarrier));
    assert_eq!(one, results(2, Some(Plant::ClunkSkipsBarrier)));
    // It stopped at the first failing seed, if one failed.
    assert!(one[..one.len() - 1].iter().all(|l| l.ends_with(" None")));
}
