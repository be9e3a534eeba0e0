//! A bench-only http-stream function (fnrs-fdk). The request body is a byte
//! count `N` (decimal, optionally as `{"size": N}`); the answer streams `N`
//! zero bytes in 64 KiB chunks. An empty or unparsable body answers `ok`.

use bytes::Bytes;
use fnrs_fdk::{Context, Incoming, Response};

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

fn parse_size(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if let Ok(n) = text.parse() {
        return Some(n);
    }
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    json["size"].as_u64()
}

async fn handle(_ctx: Context, body: Incoming) -> Result<Response, fnrs_fdk::BoxError> {
    let input = fnrs_fdk::read_body(body).await?;
    let Some(size) = parse_size(&input) else {
        return Ok(Response::text("ok"));
    };
    let chunks = futures::stream::unfold(size, |left| async move {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK as u64);
        let chunk = Bytes::from_static(&ZEROS[..n as usize]);
        Some((Ok::<_, std::io::Error>(chunk), left - n))
    });
    Ok(Response::stream(chunks).header("content-type", "application/octet-stream"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = fnrs_fdk::run(handle).await {
        eprintln!("bench-fn: {e}");
        std::process::exit(1);
    }
}
