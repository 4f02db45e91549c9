//! co9p-sim: the deterministic simulator (seeded scheduler, faulty filesystem, virtual guest).
