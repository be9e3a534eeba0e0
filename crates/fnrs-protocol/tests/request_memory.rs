//! What the stdin formats hold in memory while a request streams to a real
//! function process: this process's peak resident size (`VmHWM`, reset
//! through `/proc/self/clear_refs`) is compared with the body's size.
//!
//! Its own test binary, so that no other test shares the process.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use fnrs_protocol::{BoxBody, CallRequest, Format, Limits, StdioConn, gojson};
use http_body_util::BodyExt;
use tokio::process::{Child, Command};

/// This process's peak resident size in bytes since the last [`reset_peak`].
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Starts the peak over from the current resident size; returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    peak_rss()
}

/// A hot stdin function that reads each request to its final newline and
/// answers how many bytes it got (as a `json` reply and as a `text/plain`
/// CloudEvent, whichever `FORMAT` says).
const COUNTER: &str = r#"
import sys
fmt = sys.argv[1]
i, o = sys.stdin.buffer, sys.stdout
n = 0
while True:
    b = i.read1(1 << 16)
    if not b:
        break
    n += len(b)
    if b.endswith(b"\n"):
        if fmt == "json":
            o.write('{"body":"%d"}\n' % n)
        else:
            o.write('{"contentType":"text/plain","data":"%d"}\n' % n)
        o.flush()
        n = 0
"#;

fn counter(format: Format) -> (Child, StdioConn) {
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", COUNTER, format.name()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3");
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let conn = StdioConn::new(format, Box::pin(stdin), Box::pin(stdout), Limits::default());
    (child, conn)
}

/// A body of `pattern` repeated `times` times between `head` and `tail`,
/// generated in 64 KiB pieces (cut anywhere in the pattern, so UTF-8
/// sequences straddle pieces), with no size hint.
fn generated(
    head: &'static [u8],
    pattern: &'static [u8],
    times: u64,
    tail: &'static [u8],
) -> BoxBody {
    use futures::StreamExt;
    const PIECE: usize = 64 * 1024;
    let tile: Bytes = pattern
        .iter()
        .copied()
        .cycle()
        .take(PIECE + pattern.len())
        .collect::<Vec<u8>>()
        .into();
    let total = pattern.len() as u64 * times;
    let middle = futures::stream::unfold(0u64, move |at| {
        let tile = tile.clone();
        async move {
            if at >= total {
                return None;
            }
            let len = (total - at).min(PIECE as u64) as usize;
            let off = (at % pattern.len() as u64) as usize;
            Some((tile.slice(off..off + len), at + len as u64))
        }
    });
    let stream = futures::stream::once(async move { Bytes::from_static(head) })
        .chain(middle)
        .chain(futures::stream::once(
            async move { Bytes::from_static(tail) },
        ))
        .map(|b| Ok::<_, fnrs_protocol::BoxError>(http_body::Frame::data(b)));
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

fn request(body: BoxBody, content_type: &str) -> CallRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", content_type.parse().unwrap());
    CallRequest {
        call_id: "01CALLID0000000000000000000".into(),
        deadline: fnrs_model::DateTime::now().plus_secs(600),
        timeout: Duration::from_secs(600),
        method: http::Method::POST,
        url: "http://localhost:8080/invoke/f".into(),
        headers,
        gateway: false,
        body,
    }
}

/// The body the function answered, and the status.
async fn answer(conn: &mut StdioConn, req: CallRequest) -> (u16, String) {
    let h = conn.call(req).await.unwrap_or_else(|e| panic!("{e:?}"));
    let status = h.response.status().as_u16();
    let body = h.response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// 1 GiB through the `json` format: the function gets every byte (escaped
/// exactly as a whole body is), and this process never holds more than a
/// few pieces of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_streams_a_gibibyte_in_bounded_memory() {
    // Quote, `<`, newline, 2-, 3- and 4-byte characters, U+2028, invalid.
    const PATTERN: &[u8] = b"a\"<\n\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe2\x80\xa8\xff";
    let times = (1u64 << 30) / PATTERN.len() as u64;
    let mut escaped = Vec::new();
    gojson::write_bytes_as_str(&mut escaped, PATTERN);
    let escaped = escaped.len() as u64 - 2;

    let (_child, mut conn) = counter(Format::Json);
    let (_, empty) = answer(
        &mut conn,
        request(generated(b"", b"", 0, b""), "text/plain"),
    )
    .await;
    let empty: u64 = empty.parse().unwrap();

    let base = reset_peak();
    let (status, got) = answer(
        &mut conn,
        request(generated(b"", PATTERN, times, b""), "text/plain"),
    )
    .await;
    let peak = peak_rss() - base;
    assert_eq!(status, 200);
    assert_eq!(got.parse::<u64>().unwrap(), empty + times * escaped);
    eprintln!(
        "json: {} bytes of body, peak resident growth {peak} bytes",
        PATTERN.len() as u64 * times
    );
    assert!(peak < 8 << 20, "peak resident growth {peak} bytes");
}

/// A cloudevent body must be parsed whole: beyond its cap it is refused
/// with Fn's 413 before the function sees any of it, and no more than the
/// cap is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevent_body_beyond_the_cap_is_413() {
    let (_child, mut conn) = counter(Format::CloudEvent);
    let cap = fnrs_protocol::BUFFERED_REQUEST_CAP;
    // A JSON string, one byte over the cap.
    let body = generated(b"\"", b"a", cap - 1, b"\"");
    let base = reset_peak();
    let e = conn
        .call(request(body, "application/json"))
        .await
        .unwrap_err();
    let peak = peak_rss() - base;
    assert_eq!(e.error.status, 413);
    assert_eq!(e.kind, fnrs_protocol::ErrorKind::BadRequest);
    assert!(e.instance_ok, "the function got nothing");
    assert!(peak < cap * 2 + (8 << 20), "peak {peak}");
    // The instance still serves calls.
    let (status, got) = answer(
        &mut conn,
        request(
            fnrs_protocol::full_body(&b"{\"a\":1}"[..]),
            "application/json",
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(got.parse::<u64>().unwrap() > 0);
}
