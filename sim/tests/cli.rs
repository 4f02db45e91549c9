//! The command line: impossible arguments are errors (exit status 2, one line saying
//! why), never a panic or a silent pass; a failing seed says FAILED on its own line, and
//! the summary counts the seeds actually run.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_co9p-sim"))
        .arg("run")
        .args(args)
        .output()
        .expect("co9p-sim runs")
}

fn refused(args: &[&str], says: &str) {
    let out = sim(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} ran something");
}

#[test]
fn zero_clients_is_an_error() {
    refused(&["--seed", "1", "--clients", "0"], "--clients 0");
    refused(&["--seed", "1", "--clients", "65"], "1 to 64 clients");
}

#[test]
fn a_seed_range_past_the_last_seed_is_an_error() {
    refused(
        &["--from", "18446744073709551615", "--seeds", "2"],
        "the last seed would be past 18446744073709551615",
    );
    // The very last seed alone is fine.
    let out = sim(&[
        "--from",
        "18446744073709551615",
        "--seeds",
        "1",
        "--ops",
        "5",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("seed=18446744073709551615 "), "{stdout}");
}

#[test]
fn zero_seeds_is_an_error() {
    refused(&["--seeds", "0"], "--seeds 0");
}

#[test]
fn a_missing_trace_dir_is_an_error_before_anything_runs() {
    refused(
        &["--seeds", "2", "--trace-dir", "/missing/dir"],
        "--trace-dir /missing/dir",
    );
}

#[test]
fn zero_jobs_a_timeline_of_a_campaign_and_bad_features_are_errors() {
    refused(&["--seeds", "2", "--jobs", "0"], "--jobs 0");
    refused(
        &["--seeds", "2", "--timeline", "x.html"],
        "--timeline draws one run",
    );
    let out = sim(&["--seed", "1", "--off", "warp-drive"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no feature \"warp-drive\""));
}

#[test]
fn a_missing_or_broken_repro_file_is_an_error() {
    refused(
        &["--replay", "/missing/file.repro"],
        "--replay /missing/file.repro",
    );
    let dir = tempdir("broken");
    let f = dir.join("x.repro");
    std::fs::write(&f, "seed 1\nmoves 1\nwarp c0\n").unwrap();
    refused(&["--replay", f.to_str().unwrap()], "unknown move \"warp\"");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("co9p-sim-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A campaign that fails: the failing seed's own line says FAILED, the summary counts the
/// seeds run (not those asked for), the trace, timeline and shrunk repro are written, and
/// the shrunk replay command reproduces what it says.
#[test]
fn a_failing_campaign_reports_the_seeds_it_ran_and_its_files() {
    let dir = tempdir("fail");
    let d = dir.to_str().unwrap();
    let out = sim(&[
        "--seeds",
        "500",
        "--plant",
        "clunk-skips-barrier",
        "--trace-dir",
        d,
        "--jobs",
        "2",
        "--shrink-budget",
        "300",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stdout.lines().last().expect("lines");
    assert!(last.contains(" FAILED "), "{stdout}");
    let seed: u64 = last["seed=".len()..last.find(' ').unwrap()]
        .parse()
        .unwrap();
    assert_eq!(stdout.lines().count() as u64, seed + 1, "{stdout}");
    assert!(
        stdout.lines().rev().skip(1).all(|l| !l.contains("FAILED")),
        "{stdout}"
    );
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!("{} of 500 seeds run (0..={seed})", seed + 1)),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("1 failed (first: seed {seed})")),
        "{summary}"
    );
    for f in ["trace", "html", "repro", "shrunk.trace", "shrunk.html"] {
        let p = dir.join(format!("co9p-sim-seed-{seed}.{f}"));
        assert!(p.exists(), "{} missing:\n{stderr}", p.display());
    }
    let repro = dir.join(format!("co9p-sim-seed-{seed}.repro"));
    let shrunk = stderr
        .lines()
        .find(|l| l.starts_with("shrunk: "))
        .expect("a shrunk line");
    let replay = sim(&[
        "--replay",
        repro.to_str().unwrap(),
        "--no-shrink",
        "--trace-dir",
        d,
    ]);
    let line = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(1));
    assert!(line.contains(" FAILED "), "{line}");
    // The shrunk line's size is the replay's: `-> C clients, R requests, S steps`.
    let after = &shrunk[shrunk.find("-> ").unwrap() + 3..];
    let steps: u64 = after
        .split(", ")
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        line.contains(&format!(" steps={steps} ")),
        "{shrunk}\n{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
