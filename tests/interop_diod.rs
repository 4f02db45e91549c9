//! Interop with diod's own 9P2000.L clients (`diodls`, `diodcat`, Debian package diod):
//! they list and read a co9p export. Skipped, with the reason printed, where diod's tools
//! are not installed.

mod client;

use std::process::Command;

use client::fixture::{TcpServer, test_fs};
use co9p::protocol::*;
use co9p::server::Config;

fn tool(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn diodls_and_diodcat_read_a_co9p_export() {
    let (Some(diodls), Some(diodcat)) = (tool("diodls"), tool("diodcat")) else {
        println!("SKIPPED: diodls/diodcat not installed (apt-get install diod)");
        return;
    };
    let (fs, _) = test_fs();
    let server = TcpServer::start(fs, Config::default());
    // Populate the export through the protocol.
    let mut c = server.connect();
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    c.mkdir(Fid(0), "docs", 0o755).unwrap();
    let body: Vec<u8> = (0..100_000u32)
        .map(|i| b"co9p reads back\n"[(i % 16) as usize])
        .collect();
    let d = c.walk_path(Fid(0), "docs").unwrap();
    c.lcreate(d, "big.txt", OpenFlags::WRONLY, 0o644).unwrap();
    for (i, chunk) in body.chunks(32 * 1024).enumerate() {
        c.write(d, (i * 32 * 1024) as u64, chunk).unwrap();
    }
    c.clunk(d).unwrap();
    for name in ["a", "b", "c"] {
        let d = c.walk_path(Fid(0), "docs").unwrap();
        c.lcreate(d, name, OpenFlags::WRONLY, 0o600).unwrap();
        c.clunk(d).unwrap();
    }

    let ls = Command::new(&diodls)
        .args(["-s", &server.addr, "-a", "/", "/docs"])
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "diodls failed: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(names, vec!["a", "b", "big.txt", "c"]);

    let cat = Command::new(&diodcat)
        .args(["-s", &server.addr, "-a", "/", "/docs/big.txt"])
        .output()
        .unwrap();
    assert!(
        cat.status.success(),
        "diodcat failed: {}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout.len(), body.len());
    assert!(cat.stdout == body, "diodcat read different bytes");
}
