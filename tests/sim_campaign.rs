//! A simulator campaign run from the device crate itself, over every transport and both
//! schedulers, some seeds with a knob forced on: the test `cargo mutants` runs against each mutant of `src/co` and the
//! server (see README, "Mutation testing"), since it mutates this package and runs this
//! package's tests. `CO9P_SIM_SEEDS` sets the number of seeds (default 60).
#![cfg(not(loom))]

use co9p_sim::campaign::{replay_command, run_seed};
use co9p_sim::link::Transport;
use co9p_sim::world::{RunConfig, Scheduler};

#[test]
fn seeds_pass_on_every_transport_and_scheduler() {
    let seeds: u64 = std::env::var("CO9P_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for seed in 0..seeds {
        let mut cfg = RunConfig::new(50_000 + seed);
        cfg.transport = [Transport::Direct, Transport::Virtio, Transport::Swarm][seed as usize % 3];
        if seed % 4 == 3 {
            cfg.scheduler = Scheduler::Pct;
        }
        // The knobs whose bugs the plain swarm draws rarely: hostile clients, MemFs's small
        // limits (writes cut short, EFBIG, EMLINK), clients of other uids (set-id rules).
        match seed % 6 {
            1 => cfg.force.push("hostile".into()),
            2 => cfg.force.push("limits".into()),
            4 => cfg.force.push("nonroot".into()),
            _ => {}
        }
        let (report, nondet) = run_seed(&cfg, false);
        if let Some(f) = &report.failure {
            panic!(
                "{}\n{}: {}\nreplay: {}",
                report.line(),
                f.check,
                f.detail,
                replay_command(&cfg)
            );
        }
        assert!(nondet.is_none());
        assert!(
            report.ops > 0,
            "{}: the run answered nothing",
            report.line()
        );
    }
}
