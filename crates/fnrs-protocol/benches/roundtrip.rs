//! Round trips through `HttpStreamConn` to the Rust FDK served in-process,
//! and through `StdioConn` (json) to an in-process echo over pipes. Prints
//! microseconds per call; no assertions.
//!
//! `cargo bench -p fnrs-protocol --bench roundtrip [-- CALLS]`

use std::time::{Duration, Instant};

use fnrs_protocol::{CallRequest, Format, HttpStreamConn, Limits, StdioConn, full_body};
use http_body_util::BodyExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn request(gateway: bool) -> CallRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("user-agent", "bench".parse().unwrap());
    CallRequest {
        call_id: "01BENCH0000000000000000000".into(),
        deadline: fnrs_model::DateTime::now().plus_secs(30),
        timeout: Duration::from_secs(30),
        method: http::Method::POST,
        url: "http://localhost:8080/invoke/01FN".into(),
        headers,
        gateway,
        body: full_body(r#"{"name":"bench"}"#),
    }
}

fn report(what: &str, n: u32, t: Duration) {
    println!(
        "{what:<28} {n:>7} calls  {:>8.1} µs/call  {:>9.0} calls/s",
        t.as_secs_f64() * 1e6 / f64::from(n),
        f64::from(n) / t.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lsnr.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = sock.clone();
    tokio::spawn(async move {
        fnrs_fdk::serve(
            &s,
            |_ctx, body| async move {
                let b = fnrs_fdk::read_body(body).await?;
                Ok(fnrs_fdk::Response::bytes(b).header("content-type", "application/json"))
            },
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    while !sock.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut conn = HttpStreamConn::connect(dir.path(), Limits::default())
        .await
        .unwrap();
    for gateway in [false, true] {
        for _ in 0..1000 {
            let h = conn.call(request(gateway)).await.unwrap();
            h.response.into_body().collect().await.unwrap();
        }
        let t = Instant::now();
        for _ in 0..n {
            let h = conn.call(request(gateway)).await.unwrap();
            h.response.into_body().collect().await.unwrap();
            h.done.await.unwrap();
        }
        report(
            if gateway {
                "http-stream (gateway)"
            } else {
                "http-stream (invoke)"
            },
            n,
            t.elapsed(),
        );
    }
    let _ = stop.send(());

    // json over in-memory pipes with a minimal echo "function".
    let (to_fn, fn_in) = tokio::io::duplex(1 << 16);
    let (mut fn_out, from_fn) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let mut lines = BufReader::new(fn_in).lines();
        while let Ok(Some(_)) = lines.next_line().await {
            if fn_out
                .write_all(b"{\"body\":\"ok\",\"content_type\":\"text/plain\"}\n")
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut conn = StdioConn::new(
        Format::Json,
        Box::pin(to_fn),
        Box::pin(from_fn),
        Limits::default(),
    );
    let t = Instant::now();
    for _ in 0..n {
        let h = conn.call(request(false)).await.unwrap();
        h.response.into_body().collect().await.unwrap();
    }
    report("json (in-memory pipes)", n, t.elapsed());
}
