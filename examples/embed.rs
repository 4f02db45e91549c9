//! Embedding co9p's virtio-9p device in a VMM, with the harness standing in for the guest.
//!
//! A VMM does what `main` does below: build a [`Virtio9p`] from a [`DeviceConfig`], a
//! filesystem (here [`HostFs`]: a real host directory, confined beneath it) and an
//! executor; map an [`MmioFront`] on its MMIO bus (forwarding reads and writes), built with
//! the guest's memory and a callback that raises the device's interrupt. The guest driver then does the rest through the registers; kicks
//! (QueueNotify) run [`Virtio9p::handle_kick`] on the vCPU thread, and replies are written
//! from the executor's threads.
//!
//! The other ways in (your own transport, or the vhost-user daemon) are in the crate's
//! embedding guide (`co9p::embedding`).
//!
//! Run: `cargo run --example embed [DIR]` (DIR: the directory to export; default a fresh
//! temporary one).

use std::sync::Arc;
use std::time::Duration;

use co9p::co::ThreadPool;
use co9p::fs::HostFs;
use co9p::fs::host::{HostOptions, SecurityModel};
use co9p::protocol::*;
use co9p::transport::virtio::harness::{BootOptions, GuestRam, IrqLine, Layout, VirtualGuest};
use co9p::transport::virtio::mmio::MmioFront;
use co9p::transport::virtio::{DeviceConfig, Virtio9p};

fn main() {
    // --- The host directory to export, with a file already in it. ---
    let given = std::env::args().nth(1);
    let dir = match &given {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let d = std::env::temp_dir().join(format!("co9p-embed-{}", std::process::id()));
            std::fs::create_dir_all(&d).expect("export directory");
            d
        }
    };
    std::fs::write(dir.join("from-host.txt"), b"written on the host\n").expect("host file");

    // --- The VMM side. ---
    let pool = ThreadPool::new(2);
    let config = DeviceConfig::new("hostshare");
    let opts = HostOptions {
        security_model: SecurityModel::None,
        ..HostOptions::default()
    };
    let fs = HostFs::new(&dir, opts).expect("export the directory");
    let device =
        Arc::new(Virtio9p::new(config, Arc::new(fs), pool.handle()).expect("device config"));
    let ram = GuestRam::new(16 << 20);
    let irq = IrqLine::new();
    let front = MmioFront::new(device.clone(), ram.memory().clone(), irq.notifier());

    // --- The guest side: the harness drives the registers and the virtqueue. ---
    let mut guest = VirtualGuest::new(front, ram, irq);
    let features = guest.boot(&BootOptions::default()).expect("boot");
    println!(
        "booted: tag {:?}, features {features:#x}, status {:#x}",
        String::from_utf8_lossy(&guest.mount_tag()),
        guest.status()
    );

    let mut tag = 0u16;
    let mut rpc = |guest: &mut VirtualGuest<_>, msg: Tmessage, layout: Layout| -> Rmessage {
        tag += 1;
        let t = if matches!(msg, Tmessage::Version { .. }) {
            Tag::NOTAG
        } else {
            Tag(tag)
        };
        let frame = Request::new(t, msg).to_bytes().unwrap();
        guest.submit(&frame, layout, false).expect("queue space");
        guest.kick();
        loop {
            // The device completes on the pool's threads; the guest waits for an interrupt.
            if let Some(done) = guest.poll_used().pop() {
                guest.take_interrupt();
                return Reply::decode(&done.reply, u32::MAX).expect("reply").msg;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    };
    let plain = Layout::Plain { room: 65536 };

    let r = rpc(
        &mut guest,
        Tmessage::Version {
            msize: 65536,
            version: VERSION_9P2000_L.into(),
        },
        plain,
    );
    println!("Tversion -> {r:?}");
    let r = rpc(
        &mut guest,
        Tmessage::Attach {
            fid: Fid(0),
            afid: Fid::NOFID,
            uname: "root".into(),
            aname: "".into(),
            n_uname: 0,
        },
        plain,
    );
    println!("Tattach  -> {r:?}");
    rpc(
        &mut guest,
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec![],
        },
        plain,
    );
    let r = rpc(
        &mut guest,
        Tmessage::Lcreate {
            fid: Fid(1),
            name: "hello.txt".into(),
            flags: OpenFlags::RDWR,
            mode: 0o644,
            gid: 0,
        },
        plain,
    );
    println!("Tlcreate -> {r:?}");
    let text = b"hello from the guest, through a virtqueue\n".repeat(100);
    // Linux's zero-copy Twrite layout: a 23-byte header, then the payload in pages.
    let r = rpc(
        &mut guest,
        Tmessage::Write {
            fid: Fid(1),
            offset: 0,
            data: Data(text.clone()),
        },
        Layout::ZeroCopyWrite {
            header: TWRITE_HEADER_LEN as u32,
            room: 4096,
            apart: true,
        },
    );
    println!("Twrite   -> {r:?}");
    // Linux's zero-copy Tread layout: an 11-byte header buffer, then data pages the device
    // fills straight from the file.
    let r = rpc(
        &mut guest,
        Tmessage::Read {
            fid: Fid(1),
            offset: 0,
            count: 8192,
        },
        Layout::ZeroCopyRead {
            data: 8192,
            skew: 0,
        },
    );
    match r {
        Rmessage::Read { data } => {
            println!(
                "Tread    -> {} bytes, same as written: {}; first line: {:?}",
                data.0.len(),
                data.0 == text,
                String::from_utf8_lossy(data.0.split(|b| *b == b'\n').next().unwrap_or(&[]))
            );
        }
        other => println!("Tread    -> {other:?}"),
    }
    let s = device.stats();
    println!(
        "device: {} chains popped, {} completed, {} interrupts",
        s.popped,
        s.completed,
        guest.irq.count()
    );
    // The host file, read by the guest through a walk and a read.
    rpc(
        &mut guest,
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(2),
            wnames: vec!["from-host.txt".into()],
        },
        plain,
    );
    rpc(
        &mut guest,
        Tmessage::Lopen {
            fid: Fid(2),
            flags: OpenFlags::RDONLY,
        },
        plain,
    );
    if let Rmessage::Read { data } = rpc(
        &mut guest,
        Tmessage::Read {
            fid: Fid(2),
            offset: 0,
            count: 100,
        },
        plain,
    ) {
        println!(
            "guest reads from-host.txt: {:?}",
            String::from_utf8_lossy(&data.0)
        );
    }
    // And the guest's file, seen on the host.
    let on_host = std::fs::read(dir.join("hello.txt")).expect("the guest's file on the host");
    println!(
        "host sees hello.txt: {} bytes, same as written: {}",
        on_host.len(),
        on_host == text
    );
    // Driver unload: status 0 resets the device, cancelling anything in flight.
    guest.reset();
    println!(
        "reset: status {:#x}, fids left {}",
        guest.status(),
        device.session().fid_count()
    );
    drop(guest);
    pool.shutdown();
    if given.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
