//! `co9p-bench --sweep`: a tiny sweep against a spawned `co9p serve` (the in-memory backend
//! with its fixtures made through 9P, and a host export with them made locally through
//! `--fixture-dir`) writes its CSV with every series at every point and the SVG figures.
//! No timing is asserted: only that the points and pictures are there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `co9p serve ARGS --listen unix:SOCK`, once it printed its start-up line.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str], sock: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_co9p"))
        .args(args)
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty(), "co9p serve {args:?} did not start");
    Served(child)
}

fn sweep(tag: &str, serve_args: &[&str], extra: &[&str], memory: bool) {
    let d = Dir(std::env::temp_dir().join(format!("co9p-sweep-{}-{tag}", std::process::id())));
    let export = d.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let sock = d.0.join("s.sock");
    let mut args: Vec<String> = serve_args.iter().map(|s| s.to_string()).collect();
    if args.iter().any(|a| a == "--export") {
        args.push(export.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = serve(&args, &sock);
    let out = d.0.join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_co9p-bench"));
    cmd.arg("--sweep")
        .arg(&out)
        .arg("--addr")
        .arg(format!("unix:{}", sock.display()))
        .args(["--name", "co9p-under-test", "--secs", "0.01"])
        .args(["--sweep-max-conns", "4", "--sweep-max-fids", "64"])
        .args(["--sweep-max-entries", "1000"])
        .args(extra);
    if memory {
        cmd.arg("--server-pid").arg(server.0.id().to_string());
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let xs = |series: &str| -> Vec<u64> {
        csv.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0] == series).then(|| {
                    assert_eq!(f[1], "co9p-under-test", "{l}");
                    let y: f64 = f[3].parse().unwrap();
                    assert!(y.is_finite() && y >= 0.0, "{l}");
                    f[2].parse().unwrap()
                })
            })
            .collect()
    };
    assert_eq!(xs("conns_getattr_ops_s"), [1, 2, 4], "{csv}");
    assert_eq!(xs("fids_getattr_us"), [4, 16, 64], "{csv}");
    assert_eq!(xs("fids_walk_clunk_us"), [4, 16, 64], "{csv}");
    assert_eq!(xs("dir_readdir_ns_per_entry"), [10, 100, 1000], "{csv}");
    assert_eq!(xs("dir_lookup_us"), [10, 100, 1000], "{csv}");
    let mut figures = vec!["sweep-conns.svg", "sweep-fids.svg", "sweep-dir.svg"];
    if memory {
        assert_eq!(xs("mem_conn_kib"), [4], "{csv}");
        assert_eq!(xs("mem_fid_kib"), [16, 64], "{csv}");
        // The server's own CPU time per operation, beside the wall time.
        assert_eq!(xs("conns_getattr_cpu_us"), [1, 2, 4], "{csv}");
        assert_eq!(xs("fids_getattr_cpu_us"), [4, 16, 64], "{csv}");
        assert_eq!(xs("fids_walk_clunk_cpu_us"), [4, 16, 64], "{csv}");
        assert_eq!(xs("dir_readdir_cpu_ns_per_entry"), [10, 100, 1000], "{csv}");
        assert_eq!(xs("dir_lookup_cpu_us"), [10, 100, 1000], "{csv}");
        figures.push("sweep-mem.svg");
    } else {
        assert!(!out.join("sweep-mem.svg").exists());
        assert!(xs("fids_getattr_cpu_us").is_empty(), "{csv}");
    }
    for f in figures {
        let svg = std::fs::read_to_string(out.join(f)).unwrap();
        assert!(svg.starts_with("<svg"), "{f}");
        assert!(svg.contains("co9p-under-test"), "{f} has no legend");
        assert!(svg.contains("<polyline"), "{f} has no curve");
    }
    // The fixtures are gone from the export.
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 0);
}

#[test]
fn a_tiny_sweep_on_memfs_writes_every_series_and_figure() {
    // Every connection read by the reader pool (epoll), under the default seccomp list.
    sweep(
        "mem",
        &["serve", "--backend", "mem", "--dedicated-readers", "0"],
        &[],
        true,
    );
}

#[test]
fn a_tiny_sweep_on_a_host_export_makes_its_fixtures_locally() {
    let d = std::env::temp_dir().join(format!("co9p-sweep-{}-host", std::process::id()));
    let export = d.join("export");
    sweep(
        "host",
        &["serve", "--export"],
        &["--fixture-dir", export.to_str().unwrap()],
        false,
    );
}
