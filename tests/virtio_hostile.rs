//! Hostile descriptor chains and rings. After every bad chain: the chain got exactly one
//! used entry (an `Rlerror` with the request's tag when its header was readable and a
//! reply fits, else length 0), nothing panicked or spun, and a normal request still works.
//! Queue-level corruption sets DEVICE_NEEDS_RESET with a configuration interrupt, and a
//! reset brings the device back.

mod client;

use std::sync::Arc;

use client::Client;
use client::virtio::Virtio;
use co9p::fs::MemFs;
use co9p::protocol::*;
use co9p::server::Config;
use co9p::transport::virtio::harness::{BootOptions, Completion, Layout, RawDesc};
use co9p::transport::virtio::{INT_CONFIG, STATUS_NEEDS_RESET};

const TAG: Tag = Tag(0x4242);

fn rig() -> Client<Virtio<MemFs>> {
    let mut c = Client::new(Virtio::new(Arc::new(MemFs::new()), Config::default()));
    c.attach_root();
    c
}

fn getattr_frame() -> Vec<u8> {
    Request::new(
        TAG,
        Tmessage::Getattr {
            fid: Fid(0),
            request_mask: GetattrMask::ALL,
        },
    )
    .to_bytes()
    .unwrap()
}

/// Copies `bytes` into fresh guest RAM; returns the address.
fn place(c: &mut Client<Virtio<MemFs>>, bytes: &[u8]) -> u64 {
    let a = c.link.guest.alloc(bytes.len().max(1) as u64).unwrap();
    c.link.guest.write_ram(a, bytes);
    a
}

fn room(c: &mut Client<Virtio<MemFs>>, len: u32) -> u64 {
    c.link.guest.alloc(u64::from(len)).unwrap()
}

/// Beyond the end of guest RAM.
fn outside(c: &Client<Virtio<MemFs>>) -> u64 {
    c.link.guest.ram.size() + 0x1000
}

/// Injects `descs`, kicks, runs the device; returns the chain's one used entry.
fn inject(c: &mut Client<Virtio<MemFs>>, descs: &[RawDesc]) -> Completion {
    let before = c.link.completions.len();
    let head = c.link.guest.inject(descs).expect("descriptors");
    c.link.guest.kick();
    c.link.collect();
    c.link.replies.clear();
    let mine: Vec<&Completion> = c.link.completions[before..]
        .iter()
        .filter(|x| x.head == head)
        .collect();
    assert_eq!(mine.len(), 1, "exactly one used entry for the chain");
    mine[0].clone()
}

fn assert_lerror(done: &Completion, ecode: Errno) {
    assert_lerror_bytes(done, &done.reply, ecode);
}

/// For chains whose writable buffers sit in an indirect table: the reply read from `w`.
fn assert_lerror_at(c: &Client<Virtio<MemFs>>, done: &Completion, w: u64, ecode: Errno) {
    let bytes = c.link.guest.read_ram(w, done.len as usize);
    assert_lerror_bytes(done, &bytes, ecode);
}

fn assert_lerror_bytes(done: &Completion, bytes: &[u8], ecode: Errno) {
    let reply = Reply::decode(bytes, u32::MAX).expect("a well-formed reply");
    assert_eq!(reply, Reply::new(TAG, Rmessage::Lerror { ecode }));
    assert_eq!(done.len as usize, bytes.len());
}

/// A normal request still succeeds and every chain is accounted for.
fn still_usable(c: &mut Client<Virtio<MemFs>>) {
    assert!(c.getattr(Fid(0)).is_ok());
    c.link.collect();
    c.link.settled().unwrap();
}

#[test]
fn chain_too_short_for_a_header() {
    let mut c = rig();
    let r = place(&mut c, &getattr_frame()[..5]);
    let w = room(&mut c, 64);
    let done = inject(
        &mut c,
        &[RawDesc::readable(r, 5).then(1), RawDesc::writable(w, 64)],
    );
    assert_eq!(done.len, 0);
    still_usable(&mut c);
}

#[test]
fn chain_without_readable_part() {
    let mut c = rig();
    let w = room(&mut c, 64);
    assert_eq!(inject(&mut c, &[RawDesc::writable(w, 64)]).len, 0);
    still_usable(&mut c);
}

#[test]
fn writable_before_readable() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let w = room(&mut c, 256);
    // No readable header before the writable part: nothing to answer.
    let done = inject(
        &mut c,
        &[
            RawDesc::writable(w, 256).then(1),
            RawDesc::readable(r, f.len() as u32),
        ],
    );
    assert_eq!(done.len, 0);
    // A header first, then writable, then readable again: Rlerror(EPROTO) with the tag.
    let r2 = place(&mut c, &f);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r2, f.len() as u32).then(1),
            RawDesc::writable(w, 256).then(2),
            RawDesc::readable(r2, 4),
        ],
    );
    assert_lerror(&done, Errno::EPROTO);
    still_usable(&mut c);
}

#[test]
fn readable_outside_guest_memory() {
    let mut c = rig();
    let w = room(&mut c, 256);
    let out = outside(&c);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(out, 64).then(1),
            RawDesc::writable(w, 256),
        ],
    );
    assert_eq!(done.len, 0);
    // Straddling the end of RAM.
    let edge = c.link.guest.ram.size() - 8;
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(edge, 64).then(1),
            RawDesc::writable(w, 256),
        ],
    );
    assert_eq!(done.len, 0);
    // The header readable, a later readable buffer outside: EPROTO with the tag.
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, 7).then(1),
            RawDesc::readable(out, (f.len() - 7) as u32).then(2),
            RawDesc::writable(w, 256),
        ],
    );
    assert_lerror(&done, Errno::EPROTO);
    still_usable(&mut c);
}

#[test]
fn writable_outside_guest_memory() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let out = outside(&c);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(out, 256),
        ],
    );
    assert_eq!(done.len, 0);
    let huge = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(r, u32::MAX),
        ],
    );
    assert_eq!(huge.len, 0);
    still_usable(&mut c);
}

#[test]
fn descriptor_loop() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let w = room(&mut c, 256);
    // readable -> writable -> back to the readable: walked until the queue size runs out.
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256).then(0),
        ],
    );
    assert_lerror(&done, Errno::EPROTO);
    // A descriptor pointing at itself.
    let done = inject(&mut c, &[RawDesc::readable(r, f.len() as u32).then(0)]);
    assert_eq!(done.len, 0);
    still_usable(&mut c);
}

#[test]
fn next_index_out_of_range() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let w = room(&mut c, 256);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256).then(0xffff),
        ],
    );
    assert_lerror(&done, Errno::EPROTO);
    still_usable(&mut c);
}

#[test]
fn indirect_table_inside_indirect_table() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let w = room(&mut c, 256);
    let inner = c
        .link
        .guest
        .indirect_table(&[RawDesc::writable(w, 16)])
        .unwrap();
    // After a readable and a writable entry.
    let (t, len) = c
        .link
        .guest
        .indirect_table(&[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256).then(2),
            RawDesc::indirect(inner.0, inner.1),
        ])
        .unwrap();
    let done = inject(&mut c, &[RawDesc::indirect(t, len)]);
    assert_lerror_at(&c, &done, w, Errno::EPROTO);
    // As the first entry.
    let (t, len) = c
        .link
        .guest
        .indirect_table(&[RawDesc::indirect(inner.0, inner.1)])
        .unwrap();
    assert_eq!(inject(&mut c, &[RawDesc::indirect(t, len)]).len, 0);
    still_usable(&mut c);
}

#[test]
fn bad_indirect_tables() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let (t, _) = c
        .link
        .guest
        .indirect_table(&[RawDesc::readable(r, f.len() as u32)])
        .unwrap();
    // Length not a multiple of 16, empty, and outside memory.
    for (addr, len) in [(t, 20), (t, 0), (outside(&c), 32)] {
        assert_eq!(inject(&mut c, &[RawDesc::indirect(addr, len)]).len, 0);
    }
    // An indirect table whose chain loops inside it.
    let w = room(&mut c, 256);
    let (t, len) = c
        .link
        .guest
        .indirect_table(&[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256).then(0),
        ])
        .unwrap();
    let done = inject(&mut c, &[RawDesc::indirect(t, len)]);
    assert_lerror_at(&c, &done, w, Errno::EPROTO);
    // An indirect table whose last entry goes on to an index past the table's end (the
    // memory there holds what looks like a good writable buffer).
    let w2 = room(&mut c, 256);
    let (t, len) = c
        .link
        .guest
        .indirect_table(&[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 16).then(2),
            RawDesc::writable(w2, 256),
        ])
        .unwrap();
    let done = inject(&mut c, &[RawDesc::indirect(t, len - 16)]);
    assert_lerror_at(&c, &done, w, Errno::EPROTO);
    still_usable(&mut c);
}

#[test]
fn no_writable_room() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let w = room(&mut c, 16);
    // Less than an Rlerror: the request is not run, the chain comes back empty.
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 10),
        ],
    );
    assert_eq!(done.len, 0);
    // Room for an Rlerror but not for the Rgetattr: EMSGSIZE.
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 16),
        ],
    );
    assert_lerror(&done, Errno::EMSGSIZE);
    // Room for exactly an Rlerror (11 bytes): the error goes out.
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 11),
        ],
    );
    assert_lerror(&done, Errno::EMSGSIZE);
    still_usable(&mut c);
}

#[test]
fn request_larger_than_msize() {
    let mut c = rig();
    // Declares 9000 bytes with msize 8192.
    let mut f = vec![0u8; 9000];
    f[..4].copy_from_slice(&9000u32.to_le_bytes());
    f[4] = 118;
    f[5..7].copy_from_slice(&TAG.0.to_le_bytes());
    let r = place(&mut c, &f);
    let w = room(&mut c, 256);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, 9000).then(1),
            RawDesc::writable(w, 256),
        ],
    );
    assert_lerror(&done, Errno::EMSGSIZE);
    // Declares 4 GiB - 1 with a small readable part.
    f[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    c.link.guest.write_ram(r, &f[..7]);
    let done = inject(
        &mut c,
        &[RawDesc::readable(r, 64).then(1), RawDesc::writable(w, 256)],
    );
    assert_lerror(&done, Errno::EMSGSIZE);
    still_usable(&mut c);
}

#[test]
fn size_field_disagrees_with_the_chain() {
    let mut c = rig();
    let f = getattr_frame();
    let w = room(&mut c, 256);
    // Declared larger than what the chain holds.
    let mut g = f.clone();
    g[..4].copy_from_slice(&(f.len() as u32 + 100).to_le_bytes());
    let r = place(&mut c, &g);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256),
        ],
    );
    assert_lerror(&done, Errno::EPROTO);
    // Declared smaller than a header.
    g[..4].copy_from_slice(&3u32.to_le_bytes());
    c.link.guest.write_ram(r, &g);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256),
        ],
    );
    assert_lerror(&done, Errno::EPROTO);
    // Unknown message type.
    let mut g = f.clone();
    g[4] = 250;
    let r = place(&mut c, &g);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, f.len() as u32).then(1),
            RawDesc::writable(w, 256),
        ],
    );
    assert_lerror(&done, Errno::EOPNOTSUPP);
    still_usable(&mut c);
}

/// Not hostile: any segmentation of the request and of the reply room works.
#[test]
fn odd_segmentation_is_served() {
    let mut c = rig();
    let f = getattr_frame();
    let r = place(&mut c, &f);
    let w = room(&mut c, 512);
    let mut descs: Vec<RawDesc> = (0..f.len() as u64)
        .map(|i| RawDesc::readable(r + i, 1))
        .collect();
    descs.insert(3, RawDesc::readable(r, 0)); // an empty buffer in the middle
    descs.extend((0..40).map(|i| RawDesc::writable(w + 3 * i, 3)));
    descs.push(RawDesc::writable(w + 120, 392));
    let n = descs.len();
    for (i, d) in descs.iter_mut().enumerate().take(n - 1) {
        *d = d.then(i as u16 + 1);
    }
    let done = inject(&mut c, &descs);
    let reply = Reply::decode(&done.reply, u32::MAX).unwrap();
    assert_eq!(reply.tag, TAG);
    assert!(matches!(reply.msg, Rmessage::Getattr { .. }));
    still_usable(&mut c);
}

/// Not hostile: a large Twrite into a fid made by Txattrcreate, its data spread over many
/// guest buffers of uneven sizes (the value is filled from guest pages in place, buffer
/// after buffer), reads back byte for byte once the clunk sets the value.
#[test]
fn xattr_value_written_from_many_buffers() {
    const LEN: usize = 3000;
    let mut c = rig();
    let x = c.fresh_fid();
    c.walk(Fid(0), x, &[]).unwrap();
    let created = c.call(Tmessage::Xattrcreate {
        fid: x,
        name: "user.spread".into(),
        attr_size: LEN as u64,
        flags: 0,
    });
    assert!(matches!(created, Ok(Rmessage::Xattrcreate {})));
    let value: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    let frame = Request::new(
        TAG,
        Tmessage::Write {
            fid: x,
            offset: 0,
            data: Data(value.clone()),
        },
    )
    .to_bytes()
    .unwrap();
    let w = room(&mut c, 64);
    // The 23-byte header alone, then the data in buffers of 1, 2, ... 99, 100, 1, ... bytes,
    // each in its own place (buffers that touch would be merged into one).
    let mut descs = vec![RawDesc::readable(place(&mut c, &frame[..23]), 23)];
    let mut at = 23;
    let mut step = 1;
    while at < frame.len() {
        let len = step.min(frame.len() - at);
        let a = place(&mut c, &frame[at..at + len]);
        room(&mut c, 8);
        descs.push(RawDesc::readable(a, len as u32));
        at += len;
        step = step % 100 + 1;
    }
    descs.push(RawDesc::writable(w, 64));
    let n = descs.len();
    for (i, d) in descs.iter_mut().enumerate().take(n - 1) {
        *d = d.then(i as u16 + 1);
    }
    let done = inject(&mut c, &descs);
    let reply = Reply::decode(&done.reply, u32::MAX).unwrap();
    assert_eq!(
        reply,
        Reply::new(TAG, Rmessage::Write { count: LEN as u32 })
    );
    c.clunk(x).unwrap();
    let y = c.fresh_fid();
    let size = c.call(Tmessage::Xattrwalk {
        fid: Fid(0),
        newfid: y,
        name: "user.spread".into(),
    });
    assert_eq!(size, Ok(Rmessage::Xattrwalk { size: LEN as u64 }));
    let back = c.read(y, 0, LEN as u32 + 100).unwrap();
    assert!(back == value, "the value reads back as written");
    still_usable(&mut c);
}

#[test]
fn avail_index_beyond_the_queue_needs_reset() {
    let mut c = rig();
    let irqs = c.link.guest.irq.count();
    c.link.guest.set_avail_idx_raw(1000);
    c.link.guest.kick();
    let dev = c.link.device().clone();
    assert_ne!(dev.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(c.link.guest.irq.count(), irqs + 1);
    assert_ne!(c.link.guest.take_interrupt() & INT_CONFIG, 0);
    // Nothing more is processed until reset: kicking does nothing, and does not spin.
    c.link.guest.kick();
    assert_eq!(c.link.collect(), 0);
    // The driver resets and starts over.
    c.link.guest.reset();
    c.link.guest.boot(&BootOptions::default()).unwrap();
    assert_eq!(dev.status() & STATUS_NEEDS_RESET, 0);
    c.attach_root();
    still_usable(&mut c);
}

#[test]
fn head_index_out_of_range_needs_reset() {
    let mut c = rig();
    // A good chain before the bad head is still served.
    let f = getattr_frame();
    let head = c
        .link
        .guest
        .submit(&f, Layout::Plain { room: 8192 }, false)
        .unwrap();
    c.link.guest.push_avail_raw(500);
    c.link.guest.kick();
    c.link.collect();
    c.link.replies.clear();
    assert!(
        c.link
            .completions
            .iter()
            .any(|x| x.head == head && x.len > 0)
    );
    assert_ne!(c.link.device().status() & STATUS_NEEDS_RESET, 0);
    let s = c.link.device().stats();
    assert_eq!(s.popped, s.completed);
    c.link.guest.reset();
    c.link.guest.boot(&BootOptions::default()).unwrap();
    c.attach_root();
    still_usable(&mut c);
}

#[test]
fn rings_outside_memory_need_reset() {
    use co9p::transport::virtio::mmio;
    let c = rig();
    let g = &c.link.guest;
    g.set_status(0);
    g.set_status(1);
    g.set_status(3);
    g.write_driver_features(g.device_features());
    g.set_status(11);
    g.write32(mmio::QUEUE_NUM, 128);
    let out = outside(&c);
    g.write32(mmio::QUEUE_DESC_LOW, out as u32);
    g.write32(mmio::QUEUE_DESC_HIGH, (out >> 32) as u32);
    g.write32(mmio::QUEUE_DRIVER_LOW, 0x2000);
    g.write32(mmio::QUEUE_DEVICE_LOW, 0x3000);
    g.write32(mmio::QUEUE_READY, 1);
    g.set_status(15);
    assert_ne!(g.status() & STATUS_NEEDS_RESET, 0);
    assert_ne!(g.take_interrupt() & INT_CONFIG, 0);
    assert!(!c.link.device().is_active());
}

/// Not hostile: a Tread asking fewer bytes than the file holds, with far more room than
/// that: the device writes the reply and nothing past it (the rest of the guest's buffer
/// keeps its bytes).
#[test]
fn a_read_writes_nothing_past_its_reply() {
    let mut c = rig();
    let f = c.fresh_fid();
    c.walk(Fid(0), f, &[]).unwrap();
    c.lcreate(f, "f", OpenFlags::RDWR, 0o644).unwrap();
    assert_eq!(c.write(f, 0, &[7; 1000]), Ok(1000));
    let frame = Request::new(
        TAG,
        Tmessage::Read {
            fid: f,
            offset: 0,
            count: 100,
        },
    )
    .to_bytes()
    .unwrap();
    let r = place(&mut c, &frame);
    // As Linux lays a large read out: the header's 11 bytes, then data pages.
    let h = place(&mut c, &[0xaa; 11]);
    let p1 = place(&mut c, &[0xaa; 4096]);
    let p2 = place(&mut c, &[0xaa; 4096]);
    let done = inject(
        &mut c,
        &[
            RawDesc::readable(r, frame.len() as u32).then(1),
            RawDesc::writable(h, 11).then(2),
            RawDesc::writable(p1, 64).then(3),
            RawDesc::writable(p2, 4096),
        ],
    );
    assert_eq!(done.len, 11 + 100);
    let g = &c.link.guest;
    assert_eq!(g.read_ram(p1, 64), vec![7; 64]);
    let second = g.read_ram(p2, 4096);
    assert_eq!(&second[..36], &[7; 36][..]);
    assert!(
        second[36..].iter().all(|&b| b == 0xaa),
        "bytes written past the reply"
    );
    still_usable(&mut c);
}
