//! The agent's settings, each observed where it takes effect: in the
//! answer, in the call's log, in the stored records, in the instances.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{FnDir, Srv, py_fn};

/// "big N" answers N bytes; "header N" sends a header of N bytes; "log N"
/// writes N bytes to stderr; "sleep S" sleeps; else "ok".
fn knobs() -> FnDir {
    py_fn(
        r#"    body = data.getvalue().decode()
    word, _, arg = body.partition(" ")
    if word == "big":
        return response.Response(ctx, response_data="x" * int(arg))
    if word == "header":
        return response.Response(ctx, response_data="ok", headers={"X-Big": "h" * int(arg)})
    if word == "log":
        print("l" * int(arg), file=sys.stderr, flush=True)
    if word == "sleep":
        time.sleep(float(arg))
    return response.Response(ctx, response_data="ok")"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_size_limits_cut_the_answer() {
    let s = Srv::start_with(&[
        ("FN_MAX_RESPONSE_SIZE", "1000"),
        ("FN_MAX_HDR_RESPONSE_SIZE", "2000"),
    ])
    .await;
    let d = knobs();
    let f = s.func("limits", &d.image(), json!({})).await;
    let a = s.invoke(&f, "big 500").await;
    assert_eq!((a.status, a.body.len()), (200, 500), "under the limit");
    // Over it: the stream is cut (or refused before it starts).
    let a = s.invoke(&f, "big 5000").await;
    assert!(a.body.len() < 5000, "{} bytes came through", a.body.len());
    let a = s.invoke(&f, "header 4000").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.json()["message"], "function response header too large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_size_limit_truncates_a_calls_log() {
    let s = Srv::start_with(&[("FN_MAX_LOG_SIZE_BYTES", "200")]).await;
    let d = knobs();
    let f = s.func("logs", &d.image(), json!({})).await;
    let a = s.invoke(&f, "log 5000").await;
    assert_eq!(a.status, 200, "{a:?}");
    let log = s.log_with(&f, &a.call_id(), "log truncated").await;
    assert!(log.len() < 400, "{} bytes kept", log.len());
}

/// Pruned every minute and when the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_beyond_max_calls_per_fn_are_pruned() {
    let mut s = Srv::start_with(&[("FN_MAX_CALLS_PER_FN", "3")]).await;
    let d = knobs();
    let f = s.func("pruned", &d.image(), json!({})).await;
    for _ in 0..8 {
        assert_eq!(s.invoke(&f, "x").await.status, 200);
    }
    assert!(s.server.stop().is_some_and(|st| st.success()));
    s.server.restart().await.expect("restarts on the same data");
    let mut n = usize::MAX;
    for _ in 0..50 {
        let (st, calls) = s.json("GET", &format!("/v2/fns/{f}/calls"), None).await;
        assert_eq!(st, 200, "{calls}");
        n = calls["items"].as_array().map_or(usize::MAX, Vec::len);
        if n == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 3, "records kept");
}

/// Two calls at once on a fn with one warm instance: with a long poll the
/// second waits for the first's instance; with none it starts its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_poll_decides_whether_a_waiting_call_starts_an_instance() {
    for (poll, want) in [("60000", 1), ("0", 2)] {
        let s = Arc::new(Srv::start_with(&[("FN_HOT_POLL_MSECS", poll)]).await);
        let d = knobs();
        let f = s.func("poll", &d.image(), json!({})).await;
        assert_eq!(s.invoke(&f, "warm").await.status, 200);
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let (s, f) = (s.clone(), f.clone());
                tokio::spawn(async move { s.invoke(&f, "sleep 1").await.status })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 200);
        }
        assert_eq!(s.instances().await, want, "FN_HOT_POLL_MSECS={poll}");
    }
}
