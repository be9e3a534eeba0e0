//! Functions that misbehave: too slow, crashing, out of memory, never ready.

use serde_json::json;

use crate::common::{FnDir, Srv, py_fn};

/// A Python FDK function: "sleep N" sleeps, "crash" exits, "oom" allocates
/// until killed, anything else answers "ok <body>".
fn misbehaving() -> FnDir {
    py_fn(
        r#"    body = data.getvalue().decode()
    if body.startswith("sleep "):
        time.sleep(float(body.split()[1]))
    elif body == "crash":
        os._exit(1)
    elif body == "oom":
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 * 1024))
    print("hostile: got " + body, file=sys.stderr, flush=True)
    return response.Response(ctx, response_data="ok " + body)"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_504_and_the_instance_is_replaced() {
    let s = Srv::start().await;
    let d = misbehaving();
    let f = s.func("slow", &d.image(), json!({"timeout": 1})).await;
    assert_eq!(s.invoke(&f, "warm").await.status, 200);
    let a = s.invoke(&f, "sleep 5").await;
    assert_eq!(a.status, 504, "{a:?}");
    assert_eq!(a.json()["message"], "Timed out");
    let rec = s.final_call(&f, &a.call_id()).await;
    assert_eq!(rec["status"], "timeout");
    assert_eq!(
        s.until_instances(0).await,
        0,
        "the timed-out instance is ended"
    );
    let a = s.invoke(&f, "again").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok again"));
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_502_then_a_fresh_instance() {
    let s = Srv::start().await;
    let d = misbehaving();
    let f = s.func("crashy", &d.image(), json!({})).await;
    assert_eq!(s.invoke(&f, "warm").await.status, 200);
    let a = s.invoke(&f, "crash").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.json()["message"], "error receiving function response");
    let a = s.invoke(&f, "after").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok after"));
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_502_and_the_log_says_so() {
    let s = Srv::start().await;
    let d = misbehaving();
    let f = s.func("hog", &d.image(), json!({"memory": 64})).await;
    let a = s.invoke(&f, "oom").await;
    assert_eq!(a.status, 502, "{a:?}");
    let log = s.log_with(&f, &a.call_id(), "out of memory").await;
    assert!(log.contains("out of memory"), "{log}");
    let rec = s.final_call(&f, &a.call_id()).await;
    assert_eq!(rec["status"], "error");
    assert!(
        rec["error"]
            .as_str()
            .is_some_and(|e| e.contains("out of memory")),
        "{rec}"
    );
    let a = s.invoke(&f, "fine").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok fine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_is_504_and_exit_before_ready_is_502() {
    let s = Srv::start_with(&[("FN_HOT_START_TIMEOUT_MSECS", "700")]).await;
    let silent = FnDir::new(
        "./run.sh",
        "http-stream",
        &[("run.sh", "#!/bin/sh\nexec sleep 30\n")],
    );
    let f = s.func("silent", &silent.image(), json!({})).await;
    let a = s.invoke(&f, "x").await;
    assert_eq!(a.status, 504, "{a:?}");
    assert!(
        a.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Container initialization timed out")),
        "{a:?}"
    );
    let quits = FnDir::new(
        "./run.sh",
        "http-stream",
        &[("run.sh", "#!/bin/sh\necho 'no FDK here' >&2\nexit 1\n")],
    );
    let f2 = s.func("quits", &quits.image(), json!({})).await;
    let a = s.invoke(&f2, "x").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert!(
        a.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Container failed to initialize")),
        "{a:?}"
    );
    let log = s.log_with(&f2, &a.call_id(), "no FDK here").await;
    assert!(log.contains("no FDK here"));
    assert_eq!(s.until_instances(0).await, 0);
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[silent.dir.path(), quits.dir.path()])
        .await;
}
