//! The timeline page of a failing run, rendered by headless Chromium: it loads without a
//! script error and draws a lane per client and the coroutines' lanes. Prints
//! `SKIPPED: <reason>` where Chromium is not installed (Debian: `apt-get install chromium`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use co9p_sim::campaign::{SeedResult, campaign, write_timeline};
use co9p_sim::world::{Plant, RunConfig};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .filter_map(|n| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(n))
                    .find(|f| f.is_file())
            })
        })
        .next()
}

/// Runs headless Chromium on `page` with `args`, for at most two minutes.
fn headless(bin: &Path, profile: &Path, args: &[String], page: &Path) -> (bool, String) {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { out }, &mut s).ok();
        s
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status.success(), reader.join().unwrap_or_default());
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return (false, "timed out".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failing_seeds_timeline_loads_in_chromium_and_shows_its_lanes() {
    let Some(bin) = chromium() else {
        println!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    };
    let cfg_of = |seed| RunConfig {
        plant: Some(Plant::ClunkSkipsBarrier),
        ..RunConfig::new(seed)
    };
    let mut failing = None;
    campaign(0, 500, 2, false, false, &cfg_of, &mut |r: SeedResult| {
        if r.report.failure.is_some() {
            failing = Some(r.cfg);
        }
    });
    let cfg = failing.expect("the planted bug fails a seed");
    let dir = std::env::temp_dir().join(format!("co9p-sim-timeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("timeline.html");
    let report = write_timeline(&cfg, &page, "test").expect("written");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing fetched.
    for bad in ["src=\"http", "href=\"http", "<link ", "src=\"//", "import("] {
        assert!(!html.contains(bad), "the page refers outside itself: {bad}");
    }
    let (ok, dom) = headless(&bin, &dir.join("profile"), &["--dump-dom".into()], &page);
    assert!(ok, "chromium failed: {dom}");
    assert!(!dom.contains("data-errors="), "script errors: {dom:.2000}");
    assert!(
        dom.contains("data-ready=\"1\""),
        "the script did not finish"
    );
    let lanes: usize = dom
        .split("data-lanes=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("data-lanes");
    let clients = dom.matches("class=\"lane-label client\"").count();
    assert_eq!(clients, cfg.clients, "a lane per client");
    assert!(lanes > clients + 1, "{lanes} lanes: no coroutine lanes");
    assert!(dom.contains("<svg"), "nothing drawn");
    let check = report.failure.as_ref().unwrap().check;
    assert!(
        dom.contains(&format!("FAILED {check}")),
        "the failed check is not marked"
    );
    // A screenshot renders too (kept next to the page, for a person to look at).
    let shot = dir.join("timeline.png");
    let (ok, _) = headless(
        &bin,
        &dir.join("profile"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1600,1000".into(),
        ],
        &page,
    );
    assert!(ok && shot.exists(), "no screenshot");
    let _ = std::fs::remove_dir_all(&dir);
}
