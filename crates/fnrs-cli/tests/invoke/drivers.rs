//! One driver conformance suite, run on both drivers: the same Python FDK
//! function (`testimages/python/func.py`) as a local process (`file://`) and
//! as a container image (`fnrs-test/python`, built by
//! `scripts/docker-setup.sh`), through the same calls and checks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{FnDir, Srv, assert_clean, py_venv};

/// The function both drivers run.
const FUNC_PY: &str = include_str!("../../../../testimages/python/func.py");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Process,
    Docker,
}

/// Where the function comes from for one driver.
struct Target {
    dir: Option<FnDir>,
}

impl Target {
    /// Sandboxes (cgroups, pooled ones aside) or containers of the server
    /// that exist now.
    fn running(&self, server_id: &str) -> usize {
        match &self.dir {
            Some(_) => ["/sys/fs/cgroup/memory/fnrs", "/sys/fs/cgroup/fnrs"]
                .iter()
                .filter_map(|p| std::fs::read_dir(std::path::Path::new(p).join(server_id)).ok())
                .flat_map(|rd| rd.flatten())
                .filter(|e| e.path().is_dir())
                .filter(|e| !e.file_name().to_string_lossy().starts_with("pool-"))
                .count(),
            None => {
                let out = std::process::Command::new("docker")
                    .args(["ps", "-q", "--filter"])
                    .arg(format!("label=fnrs.server={server_id}"))
                    .output()
                    .expect("docker CLI runs");
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .count()
            }
        }
    }

    fn new(kind: Kind) -> Self {
        let dir = (kind == Kind::Process).then(|| {
            let venv = py_venv();
            let launch = format!(
                "#!/bin/sh\nexec {py} {fdk} /function/func.py handler\n",
                py = venv.join("bin/python3").display(),
                fdk = venv.join("bin/fdk").display()
            );
            FnDir::new(
                "./launch.sh",
                "http-stream",
                &[("func.py", FUNC_PY), ("launch.sh", &launch)],
            )
        });
        Self { dir }
    }

    fn image(&self) -> String {
        match &self.dir {
            Some(d) => d.image(),
            None => std::env::var("FNRS_TEST_DOCKER_IMAGE_PYTHON").expect(
                "FNRS_TEST_DOCKER_IMAGE_PYTHON: run scripts/docker-setup.sh and source its env.sh",
            ),
        }
    }

    /// Check that nothing of `server_id` is left (after the server stopped).
    async fn assert_clean(&self, server_id: &str, iofs: &std::path::Path) {
        match &self.dir {
            Some(d) => assert_clean(server_id, iofs, &[d.dir.path()]).await,
            None => {
                let out = std::process::Command::new("docker")
                    .args(["ps", "-aq", "--filter"])
                    .arg(format!("label=fnrs.server={server_id}"))
                    .output()
                    .expect("docker CLI runs");
                let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
                assert!(left.is_empty(), "containers left: {left}");
                assert!(!iofs.join("fnrs").join(server_id).exists(), "iofs dir left");
            }
        }
    }
}

macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn process() { super::$name(super::Kind::Process).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn docker() { super::$name(super::Kind::Docker).await }
        }
    )* };
}

on_both_drivers!(
    hot_instance_serves_invoke_and_trigger,
    parallel_calls_then_reuse,
    timeout_is_504_and_the_instance_replaced,
    crash_is_502_then_a_fresh_instance,
    function_error_is_502_and_the_instance_kept,
    out_of_memory_is_502_and_logged,
    detached_call_is_202_then_recorded,
    sigterm_leaves_nothing,
    client_hang_ups_leave_nothing_unowned,
);

async fn hot_instance_serves_invoke_and_trigger(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let f = s.func("py", &t.image(), json!({})).await;
    s.trigger(&f, "hello", "/py").await;
    let a = s.invoke(&f, r#"{"name":"One"}"#).await;
    assert_eq!(a.status, 200, "{kind:?}: {a:?}");
    assert_eq!(a.json()["message"], "Hello One");
    assert_eq!(a.header("content-type"), Some("application/json"));
    let b = s
        .send(
            s.http
                .get(s.url("/t/e2e/py"))
                .header("content-type", "application/json")
                .body(r#"{"name":"Two"}"#),
        )
        .await;
    assert_eq!(b.status, 200, "{kind:?}: {b:?}");
    assert_eq!(b.json()["message"], "Hello Two");
    assert_eq!(s.instances().await, 1, "{kind:?}: one hot instance");
    let log = s.log_with(&f, &b.call_id(), "greeting Two").await;
    assert!(
        log.contains(&format!("python fdk handling {}", b.call_id())),
        "{log}"
    );
}

async fn parallel_calls_then_reuse(kind: Kind) {
    let t = Target::new(kind);
    let s = Arc::new(Srv::start().await);
    let f = s.func("par", &t.image(), json!({})).await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let s = s.clone();
        let f = f.clone();
        calls.push(tokio::spawn(async move {
            s.invoke(&f, "sleep 1.5").await.status
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap(), 200, "{kind:?}");
    }
    assert_eq!(
        s.instances().await,
        3,
        "{kind:?}: three at once, three instances"
    );
    for _ in 0..3 {
        assert_eq!(s.invoke(&f, "{}").await.status, 200);
    }
    assert_eq!(s.instances().await, 3, "{kind:?}: then reused");
}

async fn timeout_is_504_and_the_instance_replaced(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let f = s.func("slow", &t.image(), json!({"timeout": 1})).await;
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
    let a = s.invoke(&f, "sleep 4").await;
    assert_eq!(a.status, 504, "{kind:?}: {a:?}");
    assert_eq!(a.json()["message"], "Timed out");
    assert_eq!(
        s.until_instances(0).await,
        0,
        "{kind:?}: the instance is ended"
    );
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
}

async fn crash_is_502_then_a_fresh_instance(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let f = s.func("crash", &t.image(), json!({})).await;
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
    let a = s.invoke(&f, "crash").await;
    assert_eq!(a.status, 502, "{kind:?}: {a:?}");
    assert_eq!(a.json()["message"], "error receiving function response");
    let b = s.invoke(&f, r#"{"name":"Again"}"#).await;
    assert_eq!(
        (b.status, b.json()["message"].as_str()),
        (200, Some("Hello Again")),
        "{kind:?}: {b:?}; /health: {}",
        s.health().await
    );
}

async fn function_error_is_502_and_the_instance_kept(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let f = s.func("boom", &t.image(), json!({})).await;
    let a = s.invoke(&f, "boom").await;
    assert_eq!(a.status, 502, "{kind:?}: {a:?}");
    assert_eq!(a.json()["message"], "function failed");
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
    assert_eq!(
        s.instances().await,
        1,
        "{kind:?}: the same instance went on"
    );
}

async fn out_of_memory_is_502_and_logged(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let f = s.func("hog", &t.image(), json!({"memory": 64})).await;
    let a = s.invoke(&f, "oom").await;
    assert_eq!(a.status, 502, "{kind:?}: {a:?}");
    let log = s.log_with(&f, &a.call_id(), "out of memory").await;
    assert!(log.contains("out of memory"));
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
}

async fn detached_call_is_202_then_recorded(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let f = s.func("bg", &t.image(), json!({})).await;
    let a = s
        .send(
            s.http
                .post(s.url(&format!("/invoke/{f}")))
                .header("fn-invoke-type", "detached")
                .body(r#"{"name":"Later"}"#),
        )
        .await;
    assert_eq!(a.status, 202, "{kind:?}: {a:?}");
    let rec = s.final_call(&f, &a.call_id()).await;
    assert_eq!(rec["status"], "success", "{kind:?}: {rec}");
    let log = s.log_with(&f, &a.call_id(), "greeting Later").await;
    assert!(log.contains("greeting Later"));
}

async fn sigterm_leaves_nothing(kind: Kind) {
    let t = Target::new(kind);
    let mut s = Srv::start().await;
    let f = s.func("gone", &t.image(), json!({})).await;
    let g = s.func("cold", &t.image(), json!({"idle_timeout": 1})).await;
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
    assert_eq!(s.invoke(&g, "{}").await.status, 200);
    let id = s.server_id().await;
    let pid = s.server.pid().expect("running");
    let url = s.url(&format!("/invoke/{f}"));
    let http = s.http.clone();
    let call = tokio::spawn(async move {
        let r = http.post(url).body("sleep 1").send().await.unwrap();
        r.status().as_u16()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        call.await.unwrap(),
        200,
        "{kind:?}: the in-flight call finished"
    );
    let status = s.server.stop();
    assert!(
        status.is_some_and(|st| st.success()),
        "{kind:?}: {status:?}"
    );
    t.assert_clean(&id, s.iofs.path()).await;
}

/// What the server says it holds against what runs: (instances, busy
/// instances, reserved MiB, sandboxes or containers running).
async fn books(s: &Srv, t: &Target, server_id: &str) -> (u64, u64, u64, usize) {
    let h = s.health().await;
    let inv = &h["invoker"];
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap();
    let busy = metrics
        .lines()
        .find(|l| l.starts_with("fn_instances{state=\"busy\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    (
        inv["instances"].as_u64().unwrap_or(u64::MAX),
        busy,
        inv["memory_used_bytes"].as_u64().unwrap_or(u64::MAX) / (1024 * 1024),
        t.running(server_id),
    )
}

/// Poll (bounded) until nothing is busy and instances, reserved memory and
/// what runs agree; returns the last reading.
async fn until_books_agree(s: &Srv, t: &Target, server_id: &str) -> (u64, u64, u64, usize) {
    let mut last = books(s, t, server_id).await;
    for _ in 0..100 {
        let (n, busy, mib, running) = last;
        if busy == 0 && mib == n * 128 && running as u64 == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = books(s, t, server_id).await;
    }
    last
}

/// A client that leaves during a cold start (the driver's start, the wait
/// for readiness) or during the call itself leaves no instance that nobody
/// owns: afterwards nothing is busy, and instances, reserved memory and the
/// sandboxes or containers running agree.
async fn client_hang_ups_leave_nothing_unowned(kind: Kind) {
    let t = Target::new(kind);
    let s = Srv::start().await;
    let id = s.server_id().await;
    let url = s.url("/invoke/");
    for (i, ms) in [2u64, 10, 40, 100, 250, 600].into_iter().enumerate() {
        let f = s.func(&format!("hangup{i}"), &t.image(), json!({})).await;
        let r = s
            .http
            .post(format!("{url}{f}"))
            .timeout(Duration::from_millis(ms))
            .body("{}")
            .send()
            .await;
        let (n, busy, mib, running) = until_books_agree(&s, &t, &id).await;
        assert!(
            busy == 0 && mib == n * 128 && running as u64 == n,
            "{kind:?}: client gone after {ms} ms ({:?}): instances {n}, busy {busy}, \
             reserved {mib} MiB, running {running}",
            r.map(|r| r.status())
        );
    }
    // During the call itself, on a warm instance.
    let f = s.func("hangup-call", &t.image(), json!({})).await;
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
    let r = s
        .http
        .post(format!("{url}{f}"))
        .timeout(Duration::from_millis(300))
        .body("sleep 2")
        .send()
        .await;
    assert!(r.is_err(), "{kind:?}: the client left first");
    let (n, busy, mib, running) = until_books_agree(&s, &t, &id).await;
    assert!(
        busy == 0 && mib == n * 128 && running as u64 == n,
        "{kind:?}: client gone during the call: instances {n}, busy {busy}, reserved {mib} MiB, running {running}"
    );
    assert_eq!(s.invoke(&f, r#"{"name":"After"}"#).await.status, 200);
    let status = {
        let mut s = s;
        let st = s.server.stop();
        t.assert_clean(&id, s.iofs.path()).await;
        st
    };
    assert!(
        status.is_some_and(|st| st.success()),
        "{kind:?}: {status:?}"
    );
}
