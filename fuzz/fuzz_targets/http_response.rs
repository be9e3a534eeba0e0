//! The `http` format's parser of a function's stdout: response head, then a
//! chunked body fed in pieces of every size.
#![no_main]

use bytes::BytesMut;
use fnrs_protocol::httpfmt::{Chunk, ChunkedDecoder, Framing, parse_response_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 64) + 1;
    // Feed the head in pieces as a pipe would deliver it.
    let mut fed = 0;
    let head = loop {
        fed = (fed + step).min(data.len());
        match parse_response_head(&data[..fed], 4096) {
            Ok(Some(h)) => break h,
            Ok(None) if fed < data.len() => continue,
            _ => return,
        }
    };
    assert!(head.head_len <= fed);
    if head.framing != Framing::Chunked {
        return;
    }
    let body = &data[head.head_len..];
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut pos = 0;
    let mut out = 0usize;
    // Every step either consumes input or ends.
    for _ in 0..(body.len() * 4 + 16) {
        match dec.decode(&mut buf) {
            Ok(Chunk::Data(d)) => {
                assert!(!d.is_empty());
                out += d.len();
                assert!(out <= body.len());
            }
            Ok(Chunk::End) | Err(_) => return,
            Ok(Chunk::NeedMore) => {
                if pos >= body.len() {
                    return;
                }
                let next = (pos + step).min(body.len());
                buf.extend_from_slice(&body[pos..next]);
                pos = next;
            }
        }
    }
    panic!("chunked decoder made no progress");
});
