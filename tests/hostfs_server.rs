//! HostFs behind the server: directory listings split over many small replies (where the
//! server drops the entries of a batch that do not fit, and HostFs resumes without a seek)
//! list every entry exactly once.

mod client;

use std::sync::Arc;

use client::{Client, InProcess};
use co9p::fs::HostFs;
use co9p::fs::host::HostOptions;
use co9p::protocol::*;
use co9p::server::Config;

#[test]
fn split_readdir_over_host_files_lists_each_entry_once() {
    let dir = std::env::temp_dir().join(format!("co9p-hostfs-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("d")).unwrap();
    let mut expected: Vec<String> = (0..300)
        .map(|i| format!("entry-with-a-longer-name-{i:03}"))
        .collect();
    for name in &expected {
        std::fs::write(dir.join("d").join(name), b"x").unwrap();
    }
    expected.push(".".into());
    expected.push("..".into());
    expected.sort();
    let fs = HostFs::new(&dir, HostOptions::default()).unwrap();
    let mut c = Client::new(InProcess::new(Arc::new(fs), Config::default()));
    c.version(65536);
    c.attach(Fid(0), "").unwrap();
    for count in [100, 128, 256, 512, 4096, 65000] {
        let d = c.walk_path(Fid(0), "d").unwrap();
        c.lopen(d, OpenFlags::DIRECTORY).unwrap();
        let mut names: Vec<String> = c
            .readdir_all(d, count)
            .into_iter()
            .map(|e| String::from_utf8(e.name.0).unwrap())
            .collect();
        names.sort();
        assert_eq!(names, expected, "count {count}");
        c.clunk(d).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
