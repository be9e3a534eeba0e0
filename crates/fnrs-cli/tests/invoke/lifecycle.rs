//! Pooling, idle timeout, capacity, detached calls across a crash, graceful
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{Srv, py_fn};

fn sleeper() -> crate::common::FnDir {
    py_fn(
        r#"    body = data.getvalue().decode()
    if body.startswith("sleep "):
        time.sleep(float(body.split()[1]))
    print("sleeper: done " + body, file=sys.stderr, flush=True)
    return response.Response(ctx, response_data="done " + body)"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_get_parallel_instances_then_reuse_and_idle_out() {
    let s = Arc::new(Srv::start().await);
    let d = sleeper();
    let f = s.func("par", &d.image(), json!({"idle_timeout": 2})).await;
    let mut calls = Vec::new();
    for i in 0..3 {
        let s = s.clone();
        let f = f.clone();
        calls.push(tokio::spawn(async move {
            s.invoke(&f, &format!("sleep 1.{i}")).await.status
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(
        s.instances().await,
        3,
        "three parallel calls, three instances"
    );
    for _ in 0..3 {
        assert_eq!(s.invoke(&f, "quick").await.status, 200);
    }
    assert_eq!(
        s.instances().await,
        3,
        "sequential calls reuse idle instances"
    );
    assert_eq!(
        s.until_instances(0).await,
        0,
        "idle instances end after idle_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_is_503_with_retry_after_and_too_big_is_400() {
    let s = Arc::new(
        Srv::start_with(&[
            ("FN_MAX_TOTAL_MEMORY_BYTES", "134217728"),
            ("FN_MAX_QUEUE_WAIT_MSECS", "300"),
        ])
        .await,
    );
    let d = sleeper();
    let f = s.func("busy", &d.image(), json!({"memory": 128})).await;
    let slow = {
        let s = s.clone();
        let f = f.clone();
        tokio::spawn(async move { s.invoke(&f, "sleep 3").await.status })
    };
    // Wait (bounded) until the slow call holds the only slot.
    for _ in 0..100 {
        if s.instances().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = s.invoke(&f, "x").await;
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.json()["message"], "Timed out - server too busy");
    assert_eq!(a.header("retry-after"), Some("15"));
    assert_eq!(slow.await.unwrap(), 200);

    let big = s.func("big", &d.image(), json!({"memory": 256})).await;
    let a = s.invoke(&big, "x").await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(
        a.json()["message"],
        "Requested CPU/Memory cannot be allocated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_call_is_202_then_recorded_with_its_log() {
    let s = Srv::start().await;
    let d = sleeper();
    let f = s.func("bg", &d.image(), json!({})).await;
    let a = s
        .send(
            s.http
                .post(s.url(&format!("/invoke/{f}")))
                .header("fn-invoke-type", "detached")
                .body("later"),
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");
    assert!(a.body.is_empty());
    let id = a.call_id();
    let rec = s.final_call(&f, &id).await;
    assert_eq!(rec["status"], "success", "{rec}");
    assert_eq!(rec["type"], "detached");
    let log = s.log_with(&f, &id, "sleeper: done later").await;
    assert!(log.contains("done later"));
    let (st, list) = s.json("GET", &format!("/v2/fns/{f}/calls"), None).await;
    assert_eq!(st, 200);
    assert_eq!(list["items"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_call_pending_at_a_crash_runs_after_restart() {
    let mut s = Srv::start().await;
    let d = sleeper();
    let f = s.func("survivor", &d.image(), json!({})).await;
    let a = s
        .send(
            s.http
                .post(s.url(&format!("/invoke/{f}")))
                .header("fn-invoke-type", "detached")
                .body("sleep 3"),
        )
        .await;
    assert_eq!(a.status, 202, "{a:?}");
    let id = a.call_id();
    // Crash while the call is running (or still starting).
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.server.kill9();
    s.server.restart().await.expect("restarts on the same data");
    let rec = s.final_call(&f, &id).await;
    assert_eq!(rec["status"], "success", "{rec}");
    assert_eq!(
        rec["stats"]["attempts"], 2,
        "the record says it ran again: {rec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish_and_leaves_nothing() {
    let s = Srv::start().await;
    let d = sleeper();
    let f = s.func("grace", &d.image(), json!({})).await;
    assert_eq!(s.invoke(&f, "warm").await.status, 200);
    let id = s.server_id().await;
    let pid = s.server.pid().expect("running");
    let url = s.url(&format!("/invoke/{f}"));
    let http = s.http.clone();
    let call = tokio::spawn(async move {
        let r = http.post(url).body("sleep 1.5").send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, body) = call.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "done sleep 1.5"));
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
}

/// The connection timeouts bound waiting for a request head only: a call
/// that runs (and answers in pieces) longer than both is not cut, and the
/// connection serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_longer_than_the_connection_timeouts_are_not_cut() {
    let s = Srv::start_with(&[
        ("FN_REQUEST_HEADER_READ_TIMEOUT", "200ms"),
        ("FN_HTTP_IDLE_TIMEOUT", "200ms"),
    ])
    .await;
    let d = crate::common::FnDir::new(
        "/bin/sh func.sh",
        "default",
        &[(
            "func.sh",
            "printf 'first\\n'\nsleep 1\nprintf 'second\\n'\n",
        )],
    );
    let f = s
        .func("slow", &d.image(), json!({"format": "default"}))
        .await;
    for _ in 0..2 {
        let a = s.invoke(&f, "").await;
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "first\nsecond\n"),
            "{a:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_outside_the_process_roots_are_refused() {
    let allowed = sleeper();
    let other = sleeper();
    let roots = allowed.dir.path().display().to_string();
    let s = Srv::start_with(&[("FN_PROCESS_ROOTS", roots.as_str())]).await;
    let ok = s.func("inside", &allowed.image(), json!({})).await;
    let (st, body) = s
        .json(
            "POST",
            "/v2/fns",
            Some(json!({"app_id": s.app_id, "name": "outside", "image": other.image()})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let (st, body) = s
        .json(
            "PUT",
            &format!("/v2/fns/{ok}"),
            Some(json!({"image": "file:///nonexistent/dir"})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    // A container image is accepted (as Fn does); here it cannot be pulled,
    // and the call's error names it.
    let docker = s.func("img", "fnrs-test/not-there:latest", json!({})).await;
    let a = s.invoke(&docker, "x").await;
    assert!(a.status >= 400, "{a:?}");
    assert!(
        a.body.contains("fnrs-test/not-there") || a.body.contains("Docker engine unavailable"),
        "{a:?}"
    );
    assert_eq!(s.invoke(&ok, "fine").await.status, 200);
}

/// `/metrics` counts the calls of each fn by outcome, times them, and splits
/// cold starts into their phases, as the first call's record does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_outcome_and_cold_starts() {
    let s = Srv::start().await;
    let d = py_fn(
        r#"    body = data.getvalue().decode()
    if body == "fail":
        raise Exception("asked to fail")
    return response.Response(ctx, response_data="ok")"#,
    );
    let f = s.func("metered", &d.image(), json!({})).await;
    for _ in 0..3 {
        assert_eq!(s.invoke(&f, "fine").await.status, 200);
    }
    assert_eq!(s.invoke(&f, "fail").await.status, 502);
    // The first call's record carries the cold start's phases, in order.
    // (Records are written in batches: wait for all four, at most 10 s.)
    let mut calls = Vec::new();
    for _ in 0..100 {
        let page = s
            .json("GET", &format!("/v2/fns/{f}/calls?per_page=10"), None)
            .await
            .1;
        calls = page["items"].as_array().cloned().unwrap_or_default();
        if calls.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.len(), 4, "{calls:?}");
    let cold: Vec<&serde_json::Value> = calls
        .iter()
        .filter_map(|c| c["stats"].get("cold_start"))
        .collect();
    assert_eq!(cold.len(), 1, "one cold start among {calls:?}");
    let us = |k: &str| {
        cold[0][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {}", cold[0]))
    };
    assert!(us("start_us") <= us("ready_us"), "{}", cold[0]);
    assert!(us("ready_us") <= us("first_byte_us"), "{}", cold[0]);
    let _ = us("reserve_us");
    let r = s.http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    // The value of the one sample whose line has all of `parts`.
    let value = |parts: &[&str]| -> f64 {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
            .collect();
        assert_eq!(lines.len(), 1, "{parts:?} in:\n{text}");
        lines[0].rsplit(' ').next().unwrap().parse().unwrap()
    };
    let fn_label = format!("fn_id=\"{f}\"");
    assert_eq!(
        value(&["fn_calls_total{", &fn_label, "outcome=\"success\""]),
        3.0
    );
    assert_eq!(
        value(&["fn_calls_total{", &fn_label, "outcome=\"error\""]),
        1.0
    );
    // The failed call kept its instance (the FDK answered 502 for it).
    assert_eq!(value(&["fn_cold_starts_total "]), 1.0);
    // Only answered calls are timed (the failed one is counted above).
    assert_eq!(value(&["fn_call_duration_seconds_count"]), 3.0);
    for phase in ["reserve", "start", "ready", "first_byte"] {
        assert_eq!(
            value(&[
                "fn_cold_start_seconds_count{",
                &format!("phase=\"{phase}\"")
            ]),
            1.0
        );
    }
}

/// A server that is starting makes its cgroups a moment before it takes its
/// lock, holding `<id>.starting` locked meanwhile: another server starting
/// then must not take them for a dead server's and remove them (that failed
/// calls of parallel servers with "cannot create cgroup").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_servers_cgroups_are_not_taken_for_leftovers() {
    let starting = format!("STARTING{}", std::process::id());
    let lock_path = std::path::Path::new("/run/fnrs").join(format!("{starting}.starting"));
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();
    let mut made = Vec::new();
    for root in ["/sys/fs/cgroup/memory/fnrs", "/sys/fs/cgroup/fnrs"] {
        if std::path::Path::new(root)
            .parent()
            .is_some_and(|p| p.join("cgroup.procs").exists())
        {
            let d = std::path::Path::new(root).join(&starting);
            std::fs::create_dir_all(&d).expect("cgroup made");
            made.push(d);
        }
    }
    assert!(!made.is_empty(), "no memory cgroup hierarchy found");
    let s = Srv::start().await;
    // The new server has cleaned up what it judged left over by now.
    let _ = s.health().await;
    for d in &made {
        assert!(d.exists(), "{} was removed", d.display());
        std::fs::remove_dir(d).expect("cgroup removed");
    }
    std::fs::remove_file(&lock_path).unwrap();
}

/// Wait (bounded) until the server has `n` instances.
async fn until_at_least(s: &Srv, n: u64) {
    for _ in 0..100 {
        if s.instances().await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never {n} instances");
}

/// A detached call that finds the server busy tries again until there is
/// room; one that stays busy past `FN_DETACHED_MAX_AGE_SECS` is recorded as
/// failed, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_detached_calls_wait_for_room_then_fail_when_too_old() {
    let s = Arc::new(
        Srv::start_with(&[
            ("FN_MAX_TOTAL_MEMORY_BYTES", "134217728"),
            ("FN_MAX_QUEUE_WAIT_MSECS", "300"),
            ("FN_DETACHED_MAX_AGE_SECS", "4"),
        ])
        .await,
    );
    let d = sleeper();
    let f = s.func("busybg", &d.image(), json!({"memory": 128})).await;
    let detached = |body: &'static str| {
        let s = s.clone();
        let f = f.clone();
        async move {
            let a = s
                .send(
                    s.http
                        .post(s.url(&format!("/invoke/{f}")))
                        .header("fn-invoke-type", "detached")
                        .body(body),
                )
                .await;
            assert_eq!(a.status, 202, "{a:?}");
            a.call_id()
        }
    };
    for (hold, want) in [("sleep 2", "success"), ("sleep 9", "error")] {
        let slow = {
            let s = s.clone();
            let f = f.clone();
            tokio::spawn(async move { s.invoke(&f, hold).await.status })
        };
        until_at_least(&s, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = detached("quick").await;
        let rec = s.final_call(&f, &id).await;
        assert_eq!(rec["status"], want, "held by {hold:?}: {rec}");
        if want == "error" {
            let why = rec["error"].as_str().unwrap_or_default();
            assert!(why.contains("FN_DETACHED_MAX_AGE_SECS"), "{rec}");
        }
        assert_eq!(slow.await.unwrap(), 200);
    }
}

/// A deleted fn leaves nothing in the agent: its instances idle out, and
/// then its pool and its `/metrics` series go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_fns_pool_goes_once_its_instances_have() {
    let s = Srv::start().await;
    let d = sleeper();
    let f = s.func("gone", &d.image(), json!({"idle_timeout": 1})).await;
    assert_eq!(s.invoke(&f, "x").await.status, 200);
    assert_eq!(s.health().await["invoker"]["pools"], 1);
    let label = format!("fn_id=\"{f}\"");
    let metrics = || async {
        let r = s.http.get(s.url("/metrics")).send().await.expect("metrics");
        r.text().await.unwrap()
    };
    assert!(
        metrics().await.contains(&label),
        "the fn's calls are counted"
    );
    let (st, _) = s.json("DELETE", &format!("/v2/fns/{f}"), None).await;
    assert_eq!(st, 204);
    assert_eq!(s.until_instances(0).await, 0);
    let mut pools = serde_json::Value::Null;
    for _ in 0..40 {
        pools = s.health().await["invoker"]["pools"].clone();
        if pools == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pools, 0, "the deleted fn's pool is gone");
    let mut text = String::new();
    for _ in 0..50 {
        text = metrics().await;
        if !text.contains(&label) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !text.contains(&label),
        "the deleted fn's series stays: {text}"
    );
}

/// The server's peak resident size, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

/// 10 000 detached calls waiting for a busy fn, 32 KiB of body each (320
/// MiB in all), keep the server's peak RSS under 150 MiB: a call waiting
/// for its turn holds no body. The same after a restart that finds them
/// all pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pending_detached_calls_hold_no_bodies() {
    const CALLS: usize = 10_000;
    const BOUND_MIB: u64 = 150;
    let mut s = Srv::start_with(&[
        ("FN_MAX_TOTAL_MEMORY_BYTES", "134217728"),
        ("FN_MAX_QUEUE_WAIT_MSECS", "60000"),
        ("FN_LOG_LEVEL", "info"),
    ])
    .await;
    let d = sleeper();
    let f = s.func("flood", &d.image(), json!({"memory": 128})).await;
    // The first to run holds the only instance for longer than the test.
    let body = format!("sleep 600 {}", "x".repeat(32 * 1024));
    let url = s.url(&format!("/invoke/{f}"));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (http, url, body, sent) = (s.http.clone(), url.clone(), body.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < CALLS {
                let r = http
                    .post(&url)
                    .header("fn-invoke-type", "detached")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(300), c)
            .await
            .expect("10 000 calls accepted in time")
            .unwrap();
    }
    let pid = s.server.pid().expect("running");
    let peak = peak_rss_mib(pid);
    eprintln!("peak RSS {peak} MiB with {CALLS} waiting");
    assert!(peak < BOUND_MIB, "peak RSS {peak} MiB with {CALLS} waiting");
    s.server.kill9();
    s.server.restart().await.expect("restarts on the same data");
    // Let the resume list them and take its turns.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = s.server.pid().expect("running");
    let peak = peak_rss_mib(pid);
    eprintln!("peak RSS {peak} MiB resuming {CALLS}");
    assert!(peak < BOUND_MIB, "peak RSS {peak} MiB resuming {CALLS}");
    s.server.kill9();
}

/// Fn's CLI wants a tag on every image (`fn create function` refuses one
/// without): `file:///dir:TAG` names the directory, the tag ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_file_image_runs_its_directory() {
    let s = Srv::start().await;
    let d = sleeper();
    let f = s
        .func("tagged", &format!("{}:0.0.1", d.image()), json!({}))
        .await;
    let a = s.invoke(&f, "x").await;
    assert_eq!((a.status, a.body.as_str()), (200, "done x"), "{a:?}");
}
