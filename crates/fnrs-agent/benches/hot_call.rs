//! The agent's own cost per hot call, in one process: calls through
//! `Agent::invoke` to an in-process Rust FDK instance (the agent tests' fake
//! driver: a task serving the real http-stream contract on a unix socket,
//! writing a log line per call), against the same instance called directly
//! through `HttpStreamConn` (what the agent wraps). The difference is the
//! agent's work: slot acquire and release, log capture, the call record and
//! metrics. Records go to a `MemoryStore`, then to SQLite (the default
//! store), where the recorder's batched writes show in the CPU column.
//! Prints wall and process CPU microseconds per call; no assertions.
//!
//! `cargo bench -p fnrs-agent --bench hot_call [-- CALLS]`

#[path = "../tests/fake/mod.rs"]
#[allow(dead_code)] // the bench uses only the serving mode
mod fake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake::{FakeDriver, Mode};
use fnrs_agent::{Agent, AgentConfig, InvokeCall};
use fnrs_datastore::{Datastore, MemoryStore, SqlOptions, SqlStore, conformance};
use fnrs_driver::{Driver, InstanceSpec};
use fnrs_model::{App, DateTime, Fn};
use fnrs_protocol::{BoxBody, CallRequest, HttpStreamConn, Limits, full_body};
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;

/// This process's CPU time so far (all threads), from `getrusage`.
fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, (t.tv_usec() as u32) * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn report(what: &str, n: u32, wall: Duration, cpu: Duration) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "{what:<40} {n:>7} calls  {:>7.1} µs/call  CPU {:>7.1} µs/call",
        per(wall),
        per(cpu)
    );
}

fn model() -> (App, Fn) {
    let app = conformance::app("bench");
    let mut func = conformance::func(&app.id, "hot");
    func.image = "fake:hello".into();
    func.idle_timeout = 300;
    (app, func)
}

/// Calls straight through `HttpStreamConn` to one fake instance.
async fn direct(n: u32) {
    let iofs = tempfile::tempdir().expect("temp dir");
    let driver = FakeDriver::new(Mode::Serve);
    let mut inst = driver
        .start(InstanceSpec {
            id: "direct".into(),
            app_id: "app".into(),
            fn_id: "fn".into(),
            image: "fake:hello".into(),
            env: Vec::new(),
            memory_mb: 128,
            iofs_dir: Some(iofs.path().to_path_buf()),
            stdin: false,
            syslog_url: None,
        })
        .await
        .expect("start");
    // Its log lines are read (and dropped), as the agent would read them.
    let io = inst.take_io().expect("io");
    let mut stderr = io.stderr;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(stderr.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    while !iofs.path().join("lsnr.sock").exists() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut conn = HttpStreamConn::connect(iofs.path(), Limits::default())
        .await
        .expect("connect");
    let call = |i: u32| CallRequest {
        call_id: format!("01BENCH{i:019}"),
        deadline: DateTime::now().plus_secs(30),
        timeout: Duration::from_secs(30),
        method: http::Method::POST,
        url: "http://127.0.0.1/invoke/fn".into(),
        headers: http::HeaderMap::new(),
        gateway: false,
        body: full_body(Bytes::from_static(b"x")),
    };
    let mut run = async |n: u32| {
        for i in 0..n {
            let h = conn.call(call(i)).await.expect("call");
            h.response.into_body().collect().await.expect("body");
            h.done.await.expect("done");
        }
    };
    run(1000).await;
    let (t, cpu) = (Instant::now(), cpu_time());
    run(n).await;
    report(
        "HttpStreamConn (no agent)",
        n,
        t.elapsed(),
        cpu_time() - cpu,
    );
    inst.destroy().await;
}

/// Calls through the agent, records going to `store`.
async fn agent(what: &str, n: u32, store: Arc<dyn Datastore>) {
    let iofs = tempfile::tempdir().expect("temp dir");
    let (app, func) = model();
    store.insert_app(&app).await.expect("app");
    store.insert_fn(&func).await.expect("fn");
    let config = AgentConfig {
        iofs_path: iofs.path().to_path_buf(),
        ..AgentConfig::default()
    };
    let driver = Arc::new(FakeDriver::new(Mode::Serve));
    let agent = Agent::start(config, store, vec![driver as Arc<dyn Driver>])
        .await
        .expect("agent");
    let (app, func) = (Arc::new(app), Arc::new(func));
    let run = async |n: u32| {
        for _ in 0..n {
            let resp = agent
                .invoke(InvokeCall {
                    app: app.clone(),
                    func: func.clone(),
                    trigger: None,
                    method: http::Method::POST,
                    url: format!("http://127.0.0.1/invoke/{}", func.id),
                    headers: http::HeaderMap::new(),
                    body: full_body(Bytes::from_static(b"x")) as BoxBody,
                    detached: false,
                })
                .await
                .map_err(|e| e.error.message)
                .expect("invoke");
            resp.into_body().collect().await.expect("body");
        }
    };
    run(1000).await;
    let (t, cpu) = (Instant::now(), cpu_time());
    run(n).await;
    report(what, n, t.elapsed(), cpu_time() - cpu);
    agent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    direct(n).await;
    agent(
        "Agent::invoke, MemoryStore",
        n,
        Arc::new(MemoryStore::new()),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite3://{}", dir.path().join("fn.db").display());
    let sql = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .expect("open SQLite");
    agent("Agent::invoke, SQLite", n, Arc::new(sql)).await;
}
