//! The virtio life cycle and register front, notification suppression, out-of-order and
//! multi-threaded completion, reset with requests in flight — and the device driven by
//! virtio-queue's own `MockSplitQueue`, a driver model not written here.

mod client;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use client::Client;
use client::virtio::{Gate, Virtio};
use co9p::co::ThreadPool;
use co9p::fs::FsResult;
use co9p::fs::MemFs;
use co9p::fs::hooked::{Hook, HookedFs, OpKind};
use co9p::protocol::*;
use co9p::server::Config;
use co9p::transport::virtio::harness::{BootError, BootOptions, Layout, RawDesc, VirtualGuest};
use co9p::transport::virtio::mmio::MmioDevice;
use co9p::transport::virtio::*;

type Fs = client::virtio::GatedFs;

fn gated() -> (Client<Virtio<Fs>>, Arc<Fs>) {
    let fs = Arc::new(HookedFs::new(MemFs::new(), Gate::default()));
    (Client::new(Virtio::new(fs.clone(), Config::default())), fs)
}

fn frame(tag: u16, msg: Tmessage) -> Vec<u8> {
    Request::new(Tag(tag), msg).to_bytes().unwrap()
}

fn getattr(tag: u16) -> Vec<u8> {
    frame(
        tag,
        Tmessage::Getattr {
            fid: Fid(0),
            request_mask: GetattrMask::ALL,
        },
    )
}

#[test]
fn mmio_identity_and_config_space() {
    let (c, _) = gated();
    let g = &c.link.guest;
    assert_eq!(g.read32(mmio::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(g.read32(mmio::VERSION), 2);
    assert_eq!(g.read32(mmio::DEVICE_ID), 9);
    assert_eq!(g.read32(mmio::VENDOR_ID), mmio::VENDOR);
    let f = g.device_features();
    for bit in [0, 28, 29, 32] {
        assert_ne!(f & (1 << bit), 0, "feature bit {bit}");
    }
    assert_eq!(g.features(), f);
    assert_eq!(g.read32(mmio::QUEUE_NUM_MAX), 128);
    assert_eq!(g.read32(mmio::QUEUE_READY), 1);
    assert_eq!(g.read32(mmio::CONFIG_GENERATION), 0);
    // Config space at any width: le16 tag_len, then the tag.
    let mut two = [0u8; 2];
    g.dev.read(mmio::CONFIG, &mut two);
    assert_eq!(u16::from_le_bytes(two), 4);
    let mut four = [0u8; 4];
    g.dev.read(mmio::CONFIG + 2, &mut four);
    assert_eq!(&four, b"co9p");
    g.dev.read(mmio::CONFIG + 4, &mut four);
    assert_eq!(&four, b"9p\0\0");
    // Read-only: writes change nothing.
    g.dev.write(mmio::CONFIG + 2, b"XX");
    assert_eq!(g.mount_tag(), b"co9p");
    // No second queue.
    g.write32(mmio::QUEUE_SEL, 1);
    assert_eq!(g.read32(mmio::QUEUE_NUM_MAX), 0);
    g.write32(mmio::QUEUE_SEL, 0);
    // Unaligned or narrow register accesses read 0.
    let mut one = [0xffu8; 1];
    g.dev.read(mmio::MAGIC_VALUE, &mut one);
    assert_eq!(one, [0]);
}

#[test]
fn status_sequence_and_feature_refusal() {
    let (mut c, _) = gated();
    let g = &mut c.link.guest;
    // Acking a feature the device does not offer: FEATURES_OK is not latched.
    let bad = BootOptions {
        extra_features: 1 << 5,
        ..BootOptions::default()
    };
    assert_eq!(g.boot(&bad), Err(BootError::FeaturesRefused));
    assert_eq!(g.status() & STATUS_FEATURES_OK, 0);
    assert_ne!(g.status() & STATUS_FAILED, 0);
    // Without VERSION_1 (a legacy driver): refused too.
    let legacy = BootOptions {
        features: F_MOUNT_TAG,
        ..BootOptions::default()
    };
    assert_eq!(g.boot(&legacy), Err(BootError::FeaturesRefused));
    // DRIVER_OK before FEATURES_OK is not latched.
    g.set_status(0);
    g.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    g.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    assert_eq!(g.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // FEATURES_OK, once latched, stays until a reset: features are not checked again,
    // even by a driver that withdraws DRIVER meanwhile (which the spec forbids).
    g.set_status(0);
    g.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    g.write_driver_features(F_VERSION_1);
    g.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    g.set_status(STATUS_ACKNOWLEDGE | STATUS_FEATURES_OK);
    assert_eq!(g.status(), STATUS_ACKNOWLEDGE | STATUS_FEATURES_OK);
    g.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    assert_eq!(
        g.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK
    );
    // Reset reads back 0; a proper boot works, with only what both offer.
    g.set_status(0);
    assert_eq!(g.status(), 0);
    let only = BootOptions {
        features: F_VERSION_1 | F_MOUNT_TAG,
        ..BootOptions::default()
    };
    assert_eq!(g.boot(&only), Ok(F_VERSION_1 | F_MOUNT_TAG));
    assert_eq!(
        g.status(),
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK
    );
    c.attach_root();
    assert!(c.getattr(Fid(0)).is_ok());
}

/// A notification names the queue it is for: the device has queue 0 only, so a kick of
/// queue 1 serves nothing, and the chain waits for a kick of queue 0.
#[test]
fn a_kick_of_another_queue_serves_nothing() {
    let (mut c, _) = gated();
    let popped = c.link.device().stats().popped;
    let g = &mut c.link.guest;
    let head = g
        .submit(&getattr(7), Layout::Plain { room: 4096 }, false)
        .unwrap();
    g.write32(mmio::QUEUE_NOTIFY, 1);
    c.link.pool.run_until_idle();
    assert_eq!(c.link.device().stats().popped, popped);
    assert!(c.link.guest.poll_used().is_empty());
    c.link.guest.write32(mmio::QUEUE_NOTIFY, 0);
    c.link.pool.run_until_idle();
    let used = c.link.guest.poll_used();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].head, head);
}

#[test]
fn queue_registers_after_driver_ok_are_ignored() {
    let (c, _) = gated();
    let g = &c.link.guest;
    let before = c.link.device().queue_config();
    g.write32(mmio::QUEUE_NUM, 16);
    g.write32(mmio::QUEUE_DESC_LOW, 0x1230);
    g.write32(mmio::QUEUE_READY, 0);
    assert_eq!(c.link.device().queue_config(), before);
}

#[test]
fn event_idx_suppresses_interrupts() {
    for (features, want_irqs) in [
        (DEVICE_FEATURES, 1),
        (DEVICE_FEATURES & !F_RING_EVENT_IDX, 3),
    ] {
        let fs = Arc::new(HookedFs::new(MemFs::new(), Gate::default()));
        let opts = BootOptions {
            features,
            ..BootOptions::default()
        };
        let link = Virtio::with(fs, DeviceConfig::new("t"), 16 << 20, &opts);
        let mut c = Client::new(link);
        c.attach_root();
        let irqs = c.link.guest.irq.count();
        // Three requests, one kick; the guest looks at the used ring only afterwards.
        for t in 1..=3 {
            c.link
                .guest
                .submit(&getattr(t), Layout::Plain { room: 8192 }, false)
                .unwrap();
        }
        assert!(c.link.guest.needs_kick());
        c.link.guest.kick();
        c.link.pool.run_until_idle();
        assert_eq!(
            c.link.guest.irq.count() - irqs,
            want_irqs,
            "features {features:#x}"
        );
        assert_eq!(c.link.guest.poll_used().len(), 3);
    }
}

#[test]
fn requests_complete_out_of_order() {
    let (mut c, fs) = gated();
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "f", OpenFlags::RDWR, 0o644).unwrap();
    fs.hook.block_writes.store(true, Ordering::SeqCst);
    let w = c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![1, 2, 3]),
    });
    let g = c.send(Tmessage::Getattr {
        fid: Fid(0),
        request_mask: GetattrMask::ALL,
    });
    c.link.collect();
    // The getattr, submitted second, is in the used ring; the write is still running.
    let last = c.link.completions.last().unwrap().clone();
    assert_eq!(Reply::decode(&last.reply, u32::MAX).unwrap().tag, g);
    assert_eq!(c.link.guest.in_flight(), 1);
    let f = c.send(Tmessage::Flush { oldtag: w });
    assert_eq!(c.reply(f), Some(Rmessage::Flush {}));
    assert_eq!(c.link.guest.in_flight(), 0);
}

#[test]
fn reset_with_requests_in_flight() {
    let (mut c, fs) = gated();
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "f", OpenFlags::RDWR, 0o644).unwrap();
    c.link.collect();
    let dev = c.link.device().clone();
    assert_eq!(dev.session().fid_count(), 2);
    // A write stuck in the filesystem, and a Tversion (not cancellable: it runs after the
    // reset, and its reply must not reach guest memory).
    fs.hook.block_writes.store(true, Ordering::SeqCst);
    c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![1]),
    });
    c.link.pool.run_until_idle();
    let vframe = frame(
        0xffff,
        Tmessage::Version {
            msize: 8192,
            version: VERSION_9P2000_L.into(),
        },
    );
    let g = &mut c.link.guest;
    let r = g.alloc(vframe.len() as u64).unwrap();
    g.write_ram(r, &vframe);
    let w = g.alloc(4096).unwrap();
    g.write_ram(w, &[0xaa; 4096]);
    g.inject(&[
        RawDesc::readable(r, vframe.len() as u32).then(1),
        RawDesc::writable(w, 4096),
    ])
    .unwrap();
    g.kick();
    let used = dev.queue_config().used_ring;
    let used_idx = g.read_ram(used + 2, 2);
    let before = dev.stats();
    assert_eq!(before.popped, before.completed + 2);
    // The driver resets the device (status 0), keeping its RAM as it is.
    g.set_status(0);
    assert_eq!(g.status(), 0);
    assert!(!dev.is_active());
    let latch = dev.reset_latch().expect("a reset leaves its latch");
    c.link.pool.run_until_idle();
    assert!(
        latch.is_open(),
        "the cancelled requests have finished: the VMM may unmap guest memory"
    );
    let g = &c.link.guest;
    assert_eq!(
        g.read_ram(w, 4096),
        vec![0xaa; 4096],
        "no reply written after reset"
    );
    assert_eq!(
        g.read_ram(used + 2, 2),
        used_idx,
        "used ring untouched after reset"
    );
    assert_eq!(dev.stats().completed, before.completed);
    assert_eq!(dev.session().inflight(), 0);
    assert_eq!(dev.session().fid_count(), 0);
    // Kicks after reset do nothing; a new boot gets a fresh session.
    c.link.guest.kick();
    c.link.guest.reset();
    c.link.guest.boot(&BootOptions::default()).unwrap();
    let again = dev.reset_latch().expect("the second reset's latch");
    assert!(!Arc::ptr_eq(&latch, &again) && again.is_open());
    fs.hook.block_writes.store(false, Ordering::SeqCst);
    c.attach_root();
    assert!(c.getattr(Fid(0)).is_ok());
    assert_eq!(dev.session().fid_count(), 1);
}

/// A large Twrite's data goes from the guest's pages to the filesystem with no staging
/// copy: the device reads those pages when the write runs, not when it pops the chain. A
/// guest that scribbles over its payload after the kick, before the coroutine runs, finds
/// its new bytes in the file (a copy taken at pop time would keep the old ones).
#[test]
fn large_write_data_is_read_in_place_from_guest_pages() {
    let (mut c, _fs) = gated();
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "f", OpenFlags::RDWR, 0o644).unwrap();
    let write = frame(
        77,
        Tmessage::Write {
            fid: Fid(1),
            offset: 0,
            data: Data(vec![1u8; 6000]),
        },
    );
    let layout = c.link.layout_for(&write);
    assert!(matches!(layout, Layout::ZeroCopyWrite { header: 23, .. }));
    let popped = c.link.device().stats().popped;
    let head = c.link.guest.submit(&write, layout, false).unwrap();
    c.link.guest.kick();
    let stats = c.link.device().stats();
    assert_eq!(stats.popped, popped + 1, "the chain was popped at the kick");
    assert_eq!(stats.completed, popped, "and has not run yet");
    // Walk the chain in the descriptor table: the 23-byte header, then payload pages.
    let table = c.link.device().queue_config().desc_table;
    let (mut i, mut payload) = (head, 0usize);
    loop {
        let d = c.link.guest.read_ram(table + 16 * u64::from(i), 16);
        let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
        let len = u32::from_le_bytes(d[8..12].try_into().unwrap()) as usize;
        let flags = u16::from_le_bytes([d[12], d[13]]);
        if flags & 2 != 0 {
            break; // writable: the reply room
        }
        if i != head {
            c.link.guest.write_ram(addr, &vec![2u8; len]);
            payload += len;
        }
        assert_ne!(flags & 1, 0, "a readable descriptor ends the chain");
        i = u16::from_le_bytes([d[14], d[15]]);
    }
    assert_eq!(payload, 6000);
    c.link.collect();
    let r = c.reply(Tag(77)).expect("Rwrite");
    assert_eq!(r, Rmessage::Write { count: 6000 });
    let back = c.read(Fid(1), 0, 6000).unwrap();
    let stale = back.iter().filter(|&&b| b != 2).count();
    assert_eq!(
        (back.len(), stale),
        (6000, 0),
        "bytes not read from the guest's pages"
    );
}

#[test]
fn many_requests_on_a_thread_pool() {
    let pool = ThreadPool::new(2);
    let fs = Arc::new(MemFs::new());
    let mut dc = DeviceConfig::new("mt");
    dc.queue_max_size = 256;
    let dev = Arc::new(Virtio9p::new(dc, fs, pool.handle()).unwrap());
    let mut g = VirtualGuest::with_device(dev.clone(), 32 << 20);
    let opts = BootOptions {
        queue_size: 256,
        ..BootOptions::default()
    };
    g.boot(&opts).unwrap();
    let wait_for = |g: &mut VirtualGuest<_>, n: usize| {
        let mut got = Vec::new();
        for _ in 0..10_000 {
            got.extend(g.poll_used());
            if got.len() >= n {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("only {} of {n} replies", got.len());
    };
    let v = frame(
        0xffff,
        Tmessage::Version {
            msize: 8192,
            version: VERSION_9P2000_L.into(),
        },
    );
    g.submit(&v, Layout::Plain { room: 8192 }, false).unwrap();
    g.kick();
    wait_for(&mut g, 1);
    let a = frame(
        1,
        Tmessage::Attach {
            fid: Fid(0),
            afid: Fid::NOFID,
            uname: "root".into(),
            aname: "".into(),
            n_uname: 0,
        },
    );
    g.submit(&a, Layout::Plain { room: 8192 }, false).unwrap();
    g.kick();
    wait_for(&mut g, 1);
    let mut tags = Vec::new();
    for round in 0..20u16 {
        for i in 0..50u16 {
            let indirect = i % 3 == 0;
            g.submit(
                &getattr(round * 50 + i + 10),
                Layout::Plain { room: 512 },
                indirect,
            )
            .unwrap();
        }
        g.kick();
        for done in wait_for(&mut g, 50) {
            let r = Reply::decode(&done.reply, u32::MAX).unwrap();
            assert!(matches!(r.msg, Rmessage::Getattr { .. }), "{r:?}");
            tags.push(r.tag.0);
        }
    }
    tags.sort();
    assert_eq!(tags, (10..1010).collect::<Vec<u16>>());
    assert_eq!(g.in_flight(), 0);
    assert_eq!(g.unexpected_used(), 0);
    let s = dev.stats();
    assert_eq!(s.popped, s.completed);
}

mod mock {
    //! virtio-queue's `MockSplitQueue` as the driver; the device used through its plain
    //! embedding API (no MMIO front).
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    struct Rig {
        pool: ThreadPool,
        mem: Arc<GuestMemoryMmap>,
        dev: Virtio9p<MemFs, co9p::co::PoolHandle>,
        irqs: Arc<AtomicU64>,
    }

    fn rig() -> Rig {
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap());
        let pool = ThreadPool::new(0);
        let dev = Virtio9p::new(
            DeviceConfig::new("mock"),
            Arc::new(MemFs::new()),
            pool.handle(),
        )
        .unwrap();
        Rig {
            pool,
            mem,
            dev,
            irqs: Arc::new(AtomicU64::new(0)),
        }
    }

    impl Rig {
        fn activate(&self, q: &MockSplitQueue<'_, GuestMemoryMmap>, features: u64) {
            self.activate_with_used(q, features, q.used_addr().0)
        }

        fn activate_with_used(
            &self,
            q: &MockSplitQueue<'_, GuestMemoryMmap>,
            features: u64,
            used: u64,
        ) {
            let d = &self.dev;
            d.set_status(STATUS_ACKNOWLEDGE);
            d.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
            d.set_driver_features(features);
            d.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
            assert_ne!(d.status() & STATUS_FEATURES_OK, 0);
            d.set_queue_size(16);
            d.set_queue_desc_table(q.desc_table_addr().0);
            d.set_queue_avail_ring(q.avail_addr().0);
            d.set_queue_used_ring(used);
            d.set_queue_ready(true);
            d.set_status(d.status() | STATUS_DRIVER_OK);
            let irqs = self.irqs.clone();
            d.activate(
                self.mem.clone(),
                Arc::new(move || {
                    irqs.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        }

        fn put(&self, addr: u64, bytes: &[u8]) {
            self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        }

        fn reply(&self, addr: u64, len: u32) -> Reply {
            let mut b = vec![0u8; len as usize];
            self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
            Reply::decode(&b, u32::MAX).unwrap()
        }

        fn run(&self) {
            self.dev.handle_kick();
            self.pool.run_until_idle();
        }
    }

    fn used(q: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> (u32, u32) {
        let e = q.used().ring().ref_at(i).unwrap().load();
        (e.id(), e.len())
    }

    #[test]
    fn version_attach_getattr() {
        let rig = rig();
        let q = MockSplitQueue::new(&*rig.mem, 16);
        rig.activate(&q, F_VERSION_1);
        let v = frame(
            0xffff,
            Tmessage::Version {
                msize: 8192,
                version: VERSION_9P2000_L.into(),
            },
        );
        rig.put(0x10_0000, &v);
        q.add_desc_chains(
            &[
                desc(0x10_0000, v.len() as u32, NEXT, 1),
                desc(0x20_0000, 8192, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        rig.run();
        assert_eq!(q.used().idx().load(), 1);
        let (id, len) = used(&q, 0);
        assert_eq!(id, 0);
        assert_eq!(
            rig.reply(0x20_0000, len).msg,
            Rmessage::Version {
                msize: 8192,
                version: VERSION_9P2000_L.into()
            }
        );
        assert_eq!(rig.irqs.load(Ordering::SeqCst), 1);

        // Two chains in one kick: an attach (segmented header) and, through an indirect
        // table, a getattr.
        let a = frame(
            1,
            Tmessage::Attach {
                fid: Fid(0),
                afid: Fid::NOFID,
                uname: "root".into(),
                aname: "".into(),
                n_uname: 0,
            },
        );
        rig.put(0x11_0000, &a);
        let g = getattr(2);
        rig.put(0x12_0000, &g);
        let table = [
            desc(0x12_0000, g.len() as u32, NEXT, 1),
            desc(0x22_0000, 100, WRITE | NEXT, 2),
            desc(0x22_0064, 1000, WRITE, 0),
        ];
        for (i, d) in table.iter().enumerate() {
            rig.mem
                .write_obj(*d, GuestAddress(0x30_0000 + 16 * i as u64))
                .unwrap();
        }
        q.add_desc_chains(
            &[
                desc(0x11_0000, 3, NEXT, 3),
                desc(0x11_0003, a.len() as u32 - 3, NEXT, 4),
                desc(0x21_0000, 8192, WRITE, 0),
                desc(0x30_0000, 48, INDIRECT, 0),
            ],
            2,
        )
        .unwrap();
        rig.run();
        assert_eq!(q.used().idx().load(), 3);
        let (id, len) = used(&q, 1);
        assert_eq!(id, 2);
        assert!(matches!(
            rig.reply(0x21_0000, len).msg,
            Rmessage::Attach { .. }
        ));
        let (id, len) = used(&q, 2);
        assert_eq!(id, 5);
        let mut b = vec![0u8; len as usize];
        rig.mem
            .read_slice(&mut b[..100], GuestAddress(0x22_0000))
            .unwrap();
        rig.mem
            .read_slice(&mut b[100..], GuestAddress(0x22_0064))
            .unwrap();
        let r = Reply::decode(&b, u32::MAX).unwrap();
        assert_eq!(r.tag, Tag(2));
        assert!(matches!(r.msg, Rmessage::Getattr { .. }));
        let s = rig.dev.stats();
        assert_eq!((s.popped, s.completed), (3, 3));
    }

    #[test]
    fn used_event_is_honoured() {
        let rig = rig();
        let q = MockSplitQueue::new(&*rig.mem, 16);
        // MockSplitQueue (0.18) places its used ring 20 bytes after the available ring,
        // which is 38 bytes long (`SplitQueueRing::end` counts elements, not bytes): used
        // entries would overwrite `used_event`. So the used ring goes to a page of its own.
        const USED: u64 = 0x8000;
        rig.activate_with_used(&q, F_VERSION_1 | F_RING_EVENT_IDX, USED);
        // used_event = 2: interrupt only once the third used entry is written.
        let used_event = GuestAddress(q.avail_addr().0 + 4 + 2 * 16);
        rig.mem.write_obj(2u16.to_le(), used_event).unwrap();
        let v = frame(
            0xffff,
            Tmessage::Version {
                msize: 8192,
                version: VERSION_9P2000_L.into(),
            },
        );
        rig.put(0x10_0000, &v);
        for i in 0..3u16 {
            q.add_desc_chains(
                &[
                    desc(0x10_0000, v.len() as u32, NEXT, 2 * i + 1),
                    desc(0x20_0000 + 0x1_0000 * u64::from(i), 8192, WRITE, 0),
                ],
                2 * i,
            )
            .unwrap();
            rig.run();
            let want = if i < 2 { 0 } else { 1 };
            assert_eq!(rig.irqs.load(Ordering::SeqCst), want, "after chain {i}");
        }
        let idx: u16 = rig.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(u16::from_le(idx), 3);
        // The device asked to be kicked at the next available index.
        let ev: u16 = rig.mem.read_obj(GuestAddress(USED + 4 + 8 * 16)).unwrap();
        assert_eq!(u16::from_le(ev), 3);
    }

    #[test]
    fn bad_chain_from_the_mock() {
        let rig = rig();
        let q = MockSplitQueue::new(&*rig.mem, 16);
        rig.activate(&q, F_VERSION_1);
        // A two-descriptor loop, then a good chain: one used entry each.
        let v = getattr(7);
        rig.put(0x10_0000, &v);
        q.add_desc_chains(
            &[
                desc(0x10_0000, v.len() as u32, NEXT, 1),
                desc(0x20_0000, 64, WRITE | NEXT, 0),
            ],
            0,
        )
        .unwrap();
        rig.run();
        assert_eq!(q.used().idx().load(), 1);
        let (id, len) = used(&q, 0);
        assert_eq!(id, 0);
        assert_eq!(
            rig.reply(0x20_0000, len),
            Reply::new(
                Tag(7),
                Rmessage::Lerror {
                    ecode: Errno::EPROTO
                }
            )
        );
    }
}

/// A VMM keeps its bus devices behind `Arc`s: the MMIO front boots the same through one
/// (every register access forwarded, reads and writes).
#[test]
fn an_mmio_front_behind_an_arc_boots() {
    let pool = ThreadPool::new(0);
    let dev = Arc::new(
        Virtio9p::new(
            DeviceConfig::new("arc"),
            Arc::new(MemFs::new()),
            pool.handle(),
        )
        .unwrap(),
    );
    // The harness's own wiring of front, RAM and interrupt line, the front then moved
    // behind an `Arc`.
    let wired = VirtualGuest::with_device(dev.clone(), 1 << 20);
    let mut g = VirtualGuest::new(Arc::new(wired.dev), wired.ram, wired.irq);
    assert_eq!(g.read32(mmio::MAGIC_VALUE), mmio::MAGIC);
    assert!(g.boot(&BootOptions::default()).is_ok());
    assert_eq!(g.mount_tag(), b"arc");
    assert!(dev.is_active());
}

/// Holds every write until the latch opens.
struct Valve(Arc<co9p::co::Latch>);

impl Hook for Valve {
    fn before(&self, op: OpKind) -> impl Future<Output = FsResult<()>> + Send {
        let wait = (op == OpKind::Write).then(|| self.0.wait());
        async move {
            if let Some(w) = wait {
                w.await;
            }
            Ok(())
        }
    }
}

/// vhost-user's GET_VRING_BASE while a request runs: the stop waits, and the request's
/// completion (on another thread than the stop's) ends the wait; the ring is handed back
/// drained, not reset. A stop the completion does not wake waits out its whole timeout
/// (two minutes here) before it finds the request done: this test then hangs for that
/// long, which is how a lost wake-up shows (cargo-mutants times it out).
#[test]
fn a_stop_waiting_for_a_request_is_woken_by_its_completion() {
    let latch = Arc::new(co9p::co::Latch::new(1));
    let fs = Arc::new(HookedFs::new(MemFs::new(), Valve(latch.clone())));
    let mut c = Client::new(Virtio::new(fs, Config::default()));
    c.attach_root();
    c.walk(Fid(0), Fid(1), &[]).unwrap();
    c.lcreate(Fid(1), "f", OpenFlags::RDWR, 0o644).unwrap();
    c.send(Tmessage::Write {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![1, 2, 3]),
    });
    c.link.pool.run_until_idle();
    let dev = c.link.device().clone();
    assert_eq!(dev.in_flight(), 1);
    let stopper = std::thread::spawn(move || dev.stop_queue(Duration::from_secs(120)));
    // The stop marks the ring stopped and starts waiting under one hold of the queue's
    // lock: once it shows, the stop is waiting.
    while !c.link.device().is_stopped() {
        assert!(!stopper.is_finished(), "the stop returned before waiting");
        std::thread::yield_now();
    }
    latch.count_down();
    c.link.pool.run_until_idle();
    let stopped = stopper.join().unwrap();
    assert!(
        matches!(stopped, Stopped::Drained { .. }),
        "the stop was not woken when the last request completed"
    );
    assert_eq!(c.link.device().in_flight(), 0);
}

/// A large read of a host file over virtio: HostFs could hand the data over as a mapping of
/// the file (as it does to a socket), but a virtio transport copies into the guest's pages
/// and takes none; the bytes arrive in place, at any offset, up to the file's end.
#[test]
fn large_reads_of_a_host_file_are_copied_into_guest_pages() {
    use co9p::fs::host::{HostFs, HostOptions};
    let dir = std::env::temp_dir().join(format!("co9p-virtio-host-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let len = 300 * 1024 + 7;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("data"), &data).unwrap();
    let fs = Arc::new(HostFs::new(&dir, HostOptions::default()).unwrap());
    let mut c = Client::new(Virtio::new(fs, Config::default()));
    c.version(512 * 1024);
    c.attach(Fid(0), "").unwrap();
    c.walk(Fid(0), Fid(1), &["data"]).unwrap();
    c.lopen(Fid(1), OpenFlags::RDONLY).unwrap();
    for (offset, count) in [
        (0usize, 256 * 1024usize),
        (1000, 128 * 1024),
        (len - 70_000, 128 * 1024),
    ] {
        let got = c.read(Fid(1), offset as u64, count as u32).unwrap();
        let end = (offset + count).min(len);
        assert!(
            got == data[offset..end],
            "read of {count} at {offset} differs"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
