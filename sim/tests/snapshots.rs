//! Decoded PDU traces of small fixed runs (2 clients, 20 workload requests). A change in
//! the device's replies, the workload or the scheduler shows up here as a readable diff.

use co9p_sim::link::Transport;
use co9p_sim::world::{RunConfig, World};

fn pdus(seed: u64) -> String {
    pdus_over(seed, Transport::Swarm)
}

fn pdus_over(seed: u64, transport: Transport) -> String {
    let r = World::run(RunConfig {
        clients: 2,
        ops: 20,
        log: true,
        transport,
        ..RunConfig::new(seed)
    });
    assert!(r.failure.is_none(), "{:?}", r.failure);
    format!("{}\n{}\n", r.line(), r.pdus.join("\n"))
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn seed_1_trace() {
    settings().bind(|| insta::assert_snapshot!("sim_seed_1", pdus(1)));
}

#[test]
fn seed_2_trace() {
    settings().bind(|| insta::assert_snapshot!("sim_seed_2", pdus(2)));
}

#[test]
fn seed_3_trace() {
    settings().bind(|| insta::assert_snapshot!("sim_seed_3", pdus(3)));
}

/// Both clients are guests driving virtio-9p devices through virtqueues.
#[test]
fn seed_4_virtio_trace() {
    settings()
        .bind(|| insta::assert_snapshot!("sim_seed_4_virtio", pdus_over(4, Transport::Virtio)));
}
