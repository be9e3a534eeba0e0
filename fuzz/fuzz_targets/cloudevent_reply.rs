//! The `cloudevent` format's decoder of a reply event (both for built events
//! and for the client's own event passed through).
#![no_main]

use fnrs_protocol::parse_cloudevent_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_cloudevent_reply(data, false)
        && let Some(s) = r.status
    {
        assert!((100..1000).contains(&s));
    }
    if let Ok(r) = parse_cloudevent_reply(data, true) {
        // The whole event is re-encoded as one JSON line.
        assert!(r.body.starts_with(b"{") && r.body.ends_with(b"}\n"));
    }
});
