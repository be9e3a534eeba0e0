//! The `json` format's reader of a function's stdout: find the end of one
//! object in pieces, then decode the reply.
#![no_main]

use fnrs_protocol::{JsonScanner, Scan, parse_json_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let mut scanner = JsonScanner::default();
    let mut fed = 0;
    while fed < data.len() {
        fed = (fed + step).min(data.len());
        match scanner.scan(&data[..fed]) {
            Scan::Complete { start, end } => {
                assert!(start < end && end <= fed);
                assert_eq!(data[start], b'{');
                let whole = JsonScanner::default().scan(data);
                assert_eq!(
                    whole,
                    Scan::Complete { start, end },
                    "piecewise and whole scans differ"
                );
                if let Ok(reply) = parse_json_reply(&data[start..end]) {
                    let _ = reply.body.len();
                }
                return;
            }
            Scan::NotAnObject => return,
            Scan::More => {}
        }
    }
});
