//! The decoder's rules, each shown on hand-built bytes that do not come from our encoder.

use co9p::protocol::*;

fn frame(ty: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut v = ((7 + body.len()) as u32).to_le_bytes().to_vec();
    v.push(ty);
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

#[test]
fn tversion_bytes_match_the_spec() {
    let mut body = 8192u32.to_le_bytes().to_vec();
    body.extend(string(b"9P2000.L"));
    let bytes = frame(100, 0xffff, &body);
    assert_eq!(bytes[..7], [21, 0, 0, 0, 100, 0xff, 0xff]);
    let pdu = Request::decode(&bytes, 8192).unwrap();
    assert_eq!(pdu.tag, Tag::NOTAG);
    assert_eq!(
        pdu.msg,
        Tmessage::Version {
            msize: 8192,
            version: "9P2000.L".into()
        }
    );
    assert_eq!(pdu.to_bytes().unwrap(), bytes);
    assert_eq!(
        pdu.to_string(),
        "Tversion tag=65535 msize=8192 version=\"9P2000.L\""
    );
}

#[test]
fn twalk_trace_line() {
    let pdu = Request::new(
        Tag(1),
        Tmessage::Walk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: vec!["a".into(), "b".into()],
        },
    );
    assert_eq!(
        pdu.to_string(),
        "Twalk tag=1 fid=0 newfid=1 wnames=[\"a\",\"b\"]"
    );
}

#[test]
fn walk_with_sixteen_names_decodes_and_seventeen_is_einval() {
    for (n, ok) in [(16u16, true), (17, false), (u16::MAX, false)] {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend(1u32.to_le_bytes());
        body.extend(n.to_le_bytes());
        for _ in 0..n.min(17) {
            body.extend(string(b"x"));
        }
        let r = Request::decode(&frame(110, 3, &body), 1 << 20);
        assert_eq!(r.is_ok(), ok, "n={n}");
        if let Err(e) = r {
            assert_eq!(e.tag, Some(Tag(3)));
            assert_eq!(e.errno(), Errno::EINVAL);
        }
    }
}

#[test]
fn unknown_type_keeps_the_tag_and_is_eopnotsupp() {
    let e = Request::decode(&frame(200, 77, &[]), 8192).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnknownType { ty: 200 });
    assert_eq!(e.tag, Some(Tag(77)));
    assert_eq!(e.errno(), Errno::EOPNOTSUPP);
    // A reply type sent as a request is unknown too.
    let e = Request::decode(&frame(101, 1, &[]), 8192).unwrap_err();
    assert_eq!(e.errno(), Errno::EOPNOTSUPP);
}

#[test]
fn size_field_must_match_and_respect_the_limit() {
    let mut bytes = frame(120, 5, &7u32.to_le_bytes());
    assert!(Request::decode(&bytes, 8192).is_ok());
    // Larger than msize: EMSGSIZE, checked before the body.
    let e = Request::decode(&bytes, 10).unwrap_err();
    assert_eq!(e.errno(), Errno::EMSGSIZE);
    // Size field that lies.
    bytes[0] = 12;
    let e = Request::decode(&bytes, 8192).unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::SizeMismatch {
            declared: 12,
            actual: 11
        }
    ));
    assert_eq!(e.errno(), Errno::EPROTO);
    // Shorter than a header.
    let e = Request::decode(&[1, 0, 0], 8192).unwrap_err();
    assert_eq!(e.tag, None);
}

#[test]
fn string_longer_than_the_frame_is_truncated_not_allocated() {
    // Tclunk is fine; Tlopen's neighbour Treadlink has no string, so use Tstatfs-free Tmkdir:
    // a name that claims 65535 bytes in an 18-byte body.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend(u16::MAX.to_le_bytes());
    body.extend(b"abc");
    let e = Request::decode(&frame(72, 9, &body), 8192).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::Truncated { .. }), "{e:?}");
    // A Twrite whose count claims more than the frame holds.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend(0u64.to_le_bytes());
    body.extend(u32::MAX.to_le_bytes());
    body.extend(b"data");
    let e = Request::decode(&frame(118, 9, &body), 8192).unwrap_err();
    assert!(
        matches!(e.kind, DecodeErrorKind::Truncated { field: "data" }),
        "{e:?}"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let e = Request::decode(&frame(120, 5, &[1, 0, 0, 0, 9]), 8192).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::TrailingBytes { extra: 1 });
}

#[test]
fn invalid_lock_type_is_einval() {
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(3); // lock type 3 does not exist
    body.extend([0u8; 4 + 8 + 8 + 4]);
    body.extend(string(b"c"));
    let e = Request::decode(&frame(52, 2, &body), 8192).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
}

#[test]
fn rread_in_place_matches_the_encoder() {
    let data = b"hello, guest".to_vec();
    let mut buf = vec![0u8; PAYLOAD_HEADER_LEN + data.len()];
    buf[PAYLOAD_HEADER_LEN..].copy_from_slice(&data);
    encode_payload_header(PayloadReply::Read, Tag(4), data.len() as u32, &mut buf).unwrap();
    let reply = Reply::new(Tag(4), Rmessage::Read { data: Data(data) });
    assert_eq!(buf, reply.to_bytes().unwrap());
}

#[test]
fn twrite_header_is_what_the_encoder_writes_before_the_data() {
    let data = b"data left in place".to_vec();
    let msg = Tmessage::Write {
        fid: Fid(9),
        offset: 1 << 40,
        data: Data(data.clone()),
    };
    let bytes = Request::new(Tag(3), msg).to_bytes().unwrap();
    assert_eq!(bytes.len(), TWRITE_HEADER_LEN + data.len());
    assert_eq!(&bytes[TWRITE_HEADER_LEN..], &data[..]);
    let h = TwriteHeader::parse(bytes[..TWRITE_HEADER_LEN].try_into().unwrap()).unwrap();
    let header = Header {
        size: bytes.len() as u32,
        ty: Ttype::Write as u8,
        tag: Tag(3),
    };
    assert_eq!(
        h,
        TwriteHeader {
            header,
            fid: Fid(9),
            offset: 1 << 40,
            count: data.len() as u32,
        }
    );
    // Another type is not a Twrite header.
    let read = Request::new(
        Tag(3),
        Tmessage::Read {
            fid: Fid(9),
            offset: 0,
            count: 4096,
        },
    );
    let bytes = read.to_bytes().unwrap();
    assert_eq!(
        TwriteHeader::parse(bytes[..TWRITE_HEADER_LEN].try_into().unwrap()),
        None
    );
}

#[test]
fn a_dirent_is_its_fixed_part_and_its_name() {
    let d = Dirent {
        qid: Qid {
            ty: QidType::DIR,
            version: 1,
            path: 2,
        },
        offset: 3,
        ty: 4,
        name: "name".into(),
    };
    let bytes = Reply::new(
        Tag(1),
        Rmessage::Readdir {
            entries: DirentList(vec![d.clone()]),
        },
    )
    .to_bytes()
    .unwrap();
    assert_eq!(bytes.len(), PAYLOAD_HEADER_LEN + DIRENT_FIXED_LEN + 4);
    assert_eq!(d.wire_len(), DIRENT_FIXED_LEN + 4);
}

#[test]
fn rreaddir_in_place_stops_at_the_first_entry_that_does_not_fit() {
    let entries: Vec<Dirent> = (0..10u64)
        .map(|i| Dirent {
            qid: Qid {
                ty: QidType::FILE,
                version: 0,
                path: i,
            },
            offset: i + 1,
            ty: 8,
            name: format!("file{i}").as_str().into(),
        })
        .collect();
    let one = entries[0].wire_len();
    let mut payload = vec![0u8; one * 3 + one / 2];
    let mut w = DirentWriter::new(&mut payload);
    let packed = entries.iter().take_while(|d| w.push(d)).count();
    assert_eq!(packed, 3);
    let len = w.len();
    let mut buf = vec![0u8; PAYLOAD_HEADER_LEN];
    encode_payload_header(PayloadReply::Readdir, Tag(8), len as u32, &mut buf).unwrap();
    buf.extend_from_slice(&payload[..len]);
    let decoded = Reply::decode(&buf, 8192).unwrap();
    assert_eq!(
        decoded.msg,
        Rmessage::Readdir {
            entries: DirentList(entries[..3].to_vec())
        }
    );
}

#[test]
fn encode_into_a_small_buffer_fails_cleanly() {
    let pdu = Reply::new(
        Tag(1),
        Rmessage::Readlink {
            target: "somewhere".into(),
        },
    );
    let mut small = [0u8; 8];
    assert!(matches!(
        pdu.encode(&mut small),
        Err(EncodeError::BufferTooSmall { .. })
    ));
}

#[test]
fn non_utf8_names_survive() {
    let name = P9String(vec![0xff, b'a', 0x00, b'/']);
    let pdu = Request::new(
        Tag(2),
        Tmessage::Mkdir {
            dfid: Fid(1),
            name: name.clone(),
            mode: 0o755,
            gid: 0,
        },
    );
    let back = Request::decode(&pdu.to_bytes().unwrap(), 8192).unwrap();
    assert_eq!(back, pdu);
    assert!(pdu.to_string().contains(r#"name="\xffa\x00/""#), "{pdu}");
}
