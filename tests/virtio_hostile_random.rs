//! Random descriptor chains, as a hostile or broken guest could post them: requests, garbage,
//! truncated and oversized frames, buffers outside guest memory, writable before readable,
//! loops, `next` indices out of range, indirect tables (nested, misaligned, with any
//! contents), several chains per kick. Whatever arrives, the device must not panic or spin;
//! every chain gets exactly one used entry, no longer than the writable room the guest gave;
//! a reply it could read back is a well-formed R-message; and afterwards the device is still
//! usable, with nothing in flight and no NEEDS_RESET (only a broken ring may cause that).

mod client;

use std::sync::Arc;

use client::Client;
use client::virtio::Virtio;
use co9p::fs::MemFs;
use co9p::protocol::*;
use co9p::server::Config;
use co9p::transport::virtio::harness::RawDesc;
use proptest::prelude::*;

/// A request a guest might send: harmless to the session's fid 0 (the attached root), so a
/// normal request still works afterwards.
fn tmessage() -> impl Strategy<Value = Tmessage> {
    let fid = (0u32..5).prop_map(Fid);
    let other = (1u32..5).prop_map(Fid);
    prop_oneof![
        fid.clone().prop_map(|fid| Tmessage::Getattr {
            fid,
            request_mask: GetattrMask::ALL
        }),
        (
            other.clone(),
            proptest::collection::vec("[a-z.]{0,3}", 0..3)
        )
            .prop_map(|(newfid, names)| Tmessage::Walk {
                fid: Fid(0),
                newfid,
                wnames: names.iter().map(|n| n.as_str().into()).collect(),
            }),
        other.clone().prop_map(|fid| Tmessage::Clunk { fid }),
        (fid.clone(), any::<u64>(), 0u32..70_000).prop_map(|(fid, offset, count)| Tmessage::Read {
            fid,
            offset,
            count
        }),
        (fid.clone(), 0u64..4, 0u32..70_000).prop_map(|(fid, offset, count)| Tmessage::Readdir {
            fid,
            offset,
            count
        }),
        any::<u16>().prop_map(|t| Tmessage::Flush { oldtag: Tag(t) }),
        fid.clone().prop_map(|fid| Tmessage::Statfs { fid }),
        other.prop_map(|fid| Tmessage::Lopen {
            fid,
            flags: OpenFlags(0)
        }),
    ]
}

/// The bytes of a readable buffer: a request, a cut or padded one, one whose size field
/// lies, or garbage.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let frame = || {
        (any::<u16>(), tmessage()).prop_map(|(t, m)| Request::new(Tag(t), m).to_bytes().unwrap())
    };
    prop_oneof![
        4 => frame(),
        1 => (frame(), any::<prop::sample::Index>()).prop_map(|(f, i)| {
            let cut = i.index(f.len() + 1);
            f[..cut].to_vec()
        }),
        1 => (frame(), proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(mut f, pad)| {
                f.extend(pad);
                f
            }),
        1 => (frame(), any::<u32>()).prop_map(|(mut f, size)| {
            f[..4].copy_from_slice(&size.to_le_bytes());
            f
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// One buffer of a chain.
#[derive(Debug, Clone)]
enum Buf {
    /// Device-readable, in fresh guest RAM.
    Readable(Vec<u8>),
    /// Device-writable room of this many bytes, in fresh guest RAM.
    Room(u32),
    /// A buffer starting beyond the end of guest RAM.
    Outside { write: bool, len: u32 },
    /// Any address, length and flags (NEXT is decided by the chain's links).
    Wild { addr: u64, len: u32, flags: u16 },
    /// An indirect table holding these buffers (an indirect table inside is a nested one),
    /// with its length field off by `skew` bytes.
    Indirect { bufs: Vec<Buf>, skew: u8 },
}

/// How a descriptor goes on: to the next one of the chain, nowhere, or any index.
#[derive(Debug, Clone, Copy)]
enum Next {
    Following,
    End,
    To(u16),
}

fn buf() -> impl Strategy<Value = Buf> {
    let leaf = prop_oneof![
        3 => request_bytes().prop_map(Buf::Readable),
        3 => prop_oneof![Just(0u32), 1..16u32, 16..9000u32].prop_map(Buf::Room),
        1 => (any::<bool>(), 0u32..9000).prop_map(|(write, len)| Buf::Outside { write, len }),
        1 => (any::<u64>(), any::<u32>(), any::<u16>())
            .prop_map(|(addr, len, flags)| Buf::Wild { addr, len, flags: flags & !1 }),
    ];
    leaf.prop_recursive(2, 24, 8, |inner| {
        (
            proptest::collection::vec(inner, 0..8),
            prop_oneof![4 => Just(0u8), 1 => 1u8..16],
        )
            .prop_map(|(bufs, skew)| Buf::Indirect { bufs, skew })
    })
}

fn next() -> impl Strategy<Value = Next> {
    prop_oneof![
        8 => Just(Next::Following),
        1 => Just(Next::End),
        1 => any::<u16>().prop_map(Next::To),
    ]
}

/// A chain: its buffers and how each goes on (the last one's `Following` ends it). Half
/// are shaped as a driver shapes them (a request, then room for the reply; directly or in an
/// indirect table), so that requests run and replies come back; the rest are anything.
fn chain() -> impl Strategy<Value = Vec<(Buf, Next)>> {
    let shaped = || {
        let room = prop_oneof![1 => 0u32..16, 3 => 16..9000u32].prop_map(Buf::Room);
        (request_bytes(), proptest::collection::vec(room, 1..4)).prop_map(|(req, rooms)| {
            std::iter::once(Buf::Readable(req))
                .chain(rooms)
                .collect::<Vec<_>>()
        })
    };
    prop_oneof![
        2 => shaped().prop_map(|bufs| bufs.into_iter().map(|b| (b, Next::Following)).collect()),
        1 => shaped().prop_map(|bufs| vec![(Buf::Indirect { bufs, skew: 0 }, Next::End)]),
        3 => proptest::collection::vec((buf(), next()), 1..10),
    ]
}

type Rig = Client<Virtio<MemFs>>;

fn rig() -> Rig {
    let mut c = Client::new(Virtio::new(Arc::new(MemFs::new()), Config::default()));
    c.attach_root();
    c
}

/// Lays `chain` out in guest RAM as raw descriptors (linked by their index in the list).
/// Returns them, the most bytes the device may write (every writable length, wherever it
/// points), and whether the reply is plainly readable back (every writable buffer is room
/// of its own, directly in the chain).
fn lay_out(c: &mut Rig, chain: &[(Buf, Next)]) -> (Vec<RawDesc>, u64, bool) {
    let g = &mut c.link.guest;
    let mut room = 0u64;
    let mut plain = true;
    let mut descs = Vec::with_capacity(chain.len());
    for (i, (b, next)) in chain.iter().enumerate() {
        let d = desc(g, b, &mut room, &mut plain, true);
        descs.push(match *next {
            Next::Following if i + 1 < chain.len() => d.then(i as u16 + 1),
            Next::Following | Next::End => d,
            Next::To(k) => d.then(k),
        });
    }
    (descs, room, plain)
}

type Guest = co9p::transport::virtio::harness::VirtualGuest<
    co9p::transport::virtio::mmio::MmioFront<MemFs, co9p::co::PoolHandle>,
>;

fn desc(g: &mut Guest, b: &Buf, room: &mut u64, plain: &mut bool, top: bool) -> RawDesc {
    let beyond = g.ram.size() + 0x1000;
    match b {
        Buf::Readable(bytes) => {
            let a = g.alloc(bytes.len().max(1) as u64).expect("guest RAM");
            g.write_ram(a, bytes);
            RawDesc::readable(a, bytes.len() as u32)
        }
        Buf::Room(len) => {
            *room += u64::from(*len);
            *plain &= top;
            let a = g.alloc(u64::from(*len).max(1)).expect("guest RAM");
            RawDesc::writable(a, *len)
        }
        Buf::Outside { write, len } => {
            *room += if *write { u64::from(*len) } else { 0 };
            *plain &= !write;
            let flags = if *write { RawDesc::WRITE } else { 0 };
            RawDesc {
                addr: beyond,
                len: *len,
                flags,
                next: 0,
            }
        }
        Buf::Wild { addr, len, flags } => {
            if flags & RawDesc::WRITE != 0 {
                *room += u64::from(*len);
                *plain = false;
            }
            if flags & RawDesc::INDIRECT != 0 {
                // An indirect table anywhere: whatever the device writes goes through
                // buffers we cannot bound from here; count its whole reach.
                *room += u64::from(u32::MAX);
                *plain = false;
            }
            RawDesc {
                addr: *addr,
                len: *len,
                flags: *flags,
                next: 0,
            }
        }
        Buf::Indirect { bufs, skew } => {
            *plain = false;
            let mut inner: Vec<RawDesc> = Vec::with_capacity(bufs.len());
            for b in bufs {
                inner.push(desc(g, b, room, plain, false));
            }
            let last = inner.len().saturating_sub(1);
            for (i, d) in inner.iter_mut().enumerate().take(last) {
                *d = d.then(i as u16 + 1);
            }
            let (table, len) = if inner.is_empty() {
                (g.alloc(16).expect("guest RAM"), 0)
            } else {
                g.indirect_table(&inner).expect("guest RAM")
            };
            RawDesc::indirect(table, len + u32::from(*skew))
        }
    }
}

/// Injects `chains` at once, kicks, and checks what came back for each.
fn run(c: &mut Rig, chains: &[Vec<(Buf, Next)>]) -> Result<(), TestCaseError> {
    let before = c.link.completions.len();
    let mut posted = Vec::new();
    for chain in chains {
        let (descs, room, plain) = lay_out(c, chain);
        let head = c.link.guest.inject(&descs).expect("descriptor slots");
        posted.push((head, room, plain));
    }
    c.link.guest.kick();
    c.link.collect();
    c.link.replies.clear();
    let done = &c.link.completions[before..];
    prop_assert_eq!(
        done.len(),
        posted.len(),
        "one used entry per chain, and no other"
    );
    for (head, room, plain) in posted {
        let mine: Vec<_> = done.iter().filter(|d| d.head == head).collect();
        prop_assert_eq!(mine.len(), 1, "exactly one used entry for chain {}", head);
        let d = mine[0];
        prop_assert!(u64::from(d.len) <= room, "used {} > room {}", d.len, room);
        if plain && d.len > 0 {
            let reply = Reply::decode(&d.reply, u32::MAX);
            prop_assert!(reply.is_ok(), "a readable reply decodes: {:?}", reply);
        }
    }
    Ok(())
}

proptest! {
    // 256 cases by default; `PROPTEST_CASES=N` runs more.
    #[test]
    fn random_chains_each_get_one_used_entry_and_leave_the_device_usable(
        kicks in proptest::collection::vec(proptest::collection::vec(chain(), 1..4), 1..4),
    ) {
        let mut c = rig();
        for chains in &kicks {
            run(&mut c, chains)?;
        }
        // A normal request still works, and every chain is accounted for.
        prop_assert!(c.getattr(Fid(0)).is_ok());
        c.link.collect();
        let settled = c.link.settled();
        prop_assert!(settled.is_ok(), "{:?}", settled);
    }
}
