//! libFuzzer target: any bytes, decoded as a request and as a reply, must not panic, and
//! what is accepted must re-encode to the same bytes.
//! Run: `cargo fuzz run decode --fuzz-dir tests/fuzz` (from the repository root).
#![no_main]

use co9p::protocol::{Message, Pdu, Rmessage, Tmessage};
use libfuzzer_sys::fuzz_target;

fn check<M: Message>(data: &[u8]) {
    if let Ok(pdu) = Pdu::<M>::decode(data, 1 << 20) {
        assert_eq!(pdu.to_bytes().unwrap(), data);
        let _ = pdu.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Tmessage>(data);
    check::<Rmessage>(data);
});
