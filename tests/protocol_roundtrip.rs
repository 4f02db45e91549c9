//! Property tests of the 9P2000.L codec: every message round-trips, and no prefix or
//! corruption of a valid message makes the decoder panic.

use co9p::protocol::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const MAX: u32 = 1 << 20;

fn roundtrip<M: Message + Eq>(pdu: &Pdu<M>) -> Result<(), TestCaseError> {
    let bytes = pdu
        .to_bytes()
        .expect("sampled messages fit their wire widths");
    prop_assert_eq!(bytes.len(), pdu.encoded_len());
    prop_assert_eq!(
        frame_size(bytes[..4].try_into().unwrap()) as usize,
        bytes.len()
    );
    prop_assert_eq!(bytes[4], pdu.msg.msg_type());
    let back = Pdu::<M>::decode(&bytes, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, pdu);
    let line = pdu.to_string();
    let expected_start = format!(
        "{}{} tag={}",
        M::PREFIX,
        pdu.msg.name().to_ascii_lowercase(),
        pdu.tag.0
    );
    prop_assert!(line.starts_with(&expected_start), "{line}");
    prop_assert!(!line.contains('\n'));
    Ok(())
}

/// Decodes every prefix (with the size field as sent and as patched to the prefix length)
/// and every single-byte corruption; none may panic, and whatever decodes must re-encode to
/// the very bytes it came from.
fn hostile_variants<M: Message + Eq>(bytes: &[u8]) {
    let check = |frame: &[u8]| {
        if let Ok(pdu) = Pdu::<M>::decode(frame, MAX) {
            assert_eq!(
                pdu.to_bytes().unwrap(),
                frame,
                "decode/encode disagree on {pdu}"
            );
        }
    };
    for len in 0..bytes.len() {
        let mut prefix = bytes[..len].to_vec();
        check(&prefix);
        if len >= 4 {
            prefix[..4].copy_from_slice(&(len as u32).to_le_bytes());
            check(&prefix);
        }
    }
    for i in 0..bytes.len() {
        for v in [0u8, 1, 0x7f, 0x80, 0xff, bytes[i] ^ 0x10] {
            let mut c = bytes.to_vec();
            c[i] = v;
            check(&c);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_request_roundtrips(idx in 0..Tmessage::TYPES.len(), seed: u64) {
        let ty = Tmessage::TYPES[idx];
        let pdu = Request::sample(ty, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        roundtrip(&pdu)?;
    }

    #[test]
    fn every_reply_roundtrips(idx in 0..Rmessage::TYPES.len(), seed: u64) {
        let ty = Rmessage::TYPES[idx];
        let pdu = Reply::sample(ty, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        roundtrip(&pdu)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = Request::decode(&bytes, MAX);
        let _ = Reply::decode(&bytes, MAX);
    }
}

#[test]
fn every_prefix_and_corruption_of_every_message_is_handled() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for round in 0..4 {
        for &ty in Tmessage::TYPES {
            let pdu = Request::sample(ty, &mut rng).unwrap();
            hostile_variants::<Tmessage>(&pdu.to_bytes().unwrap());
        }
        for &ty in Rmessage::TYPES {
            let pdu = Reply::sample(ty, &mut rng).unwrap();
            hostile_variants::<Rmessage>(&pdu.to_bytes().unwrap());
        }
        assert!(round < 4);
    }
}

#[test]
fn message_tables_cover_9p2000_l() {
    let t: Vec<u8> = vec![
        6, 8, 12, 14, 16, 18, 20, 22, 24, 26, 30, 32, 40, 50, 52, 54, 70, 72, 74, 76, 100, 102,
        104, 108, 110, 116, 118, 120, 122,
    ];
    assert_eq!(Tmessage::TYPES, &t[..]);
    let r: Vec<u8> = t.iter().map(|x| x + 1).collect();
    assert_eq!(Rmessage::TYPES, &r[..]);
}
