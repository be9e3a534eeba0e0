//! The agent's pooling, capacity, timeouts, logs, records and detached calls,
//! driven through a fast in-process driver whose "instances" are tasks serving
//! the real http-stream contract with the Rust FDK in a real iofs directory.
//! (The process driver and the real FDKs are covered end to end by the
//! `fnrs` binary's tests.)

mod fake;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use fake::{FakeDriver, Mode};
use fnrs_agent::{Agent, AgentConfig, InvokeCall};
use fnrs_datastore::{Datastore, MemoryStore};
use fnrs_driver::Driver;
use fnrs_model::{App, CallFilter, CallStatus, DateTime, Fn, PendingCall};
use fnrs_protocol::{BoxBody, full_body};
use http_body_util::BodyExt;

struct Setup {
    agent: Arc<Agent>,
    store: Arc<MemoryStore>,
    driver: Arc<FakeDriver>,
    app: Arc<App>,
    _iofs: tempfile::TempDir,
}

async fn setup(mode: Mode, tweak: impl FnOnce(&mut AgentConfig)) -> Setup {
    let iofs = tempfile::tempdir().unwrap();
    let mut config = AgentConfig {
        iofs_path: iofs.path().to_path_buf(),
        ..AgentConfig::default()
    };
    tweak(&mut config);
    let store = Arc::new(MemoryStore::new());
    let driver = Arc::new(FakeDriver::new(mode));
    let now = DateTime::now();
    let app = App {
        id: fnrs_model::new_id(),
        name: "app".into(),
        config: Default::default(),
        annotations: Default::default(),
        syslog_url: None,
        shape: String::new(),
        created_at: now,
        updated_at: now,
    };
    store.insert_app(&app).await.unwrap();
    let agent = Agent::start(
        config,
        store.clone(),
        vec![driver.clone() as Arc<dyn Driver>],
    )
    .await
    .unwrap();
    Setup {
        agent,
        store,
        driver,
        app: Arc::new(app),
        _iofs: iofs,
    }
}

impl Setup {
    async fn func(&self, name: &str, tweak: impl FnOnce(&mut Fn)) -> Arc<Fn> {
        let now = DateTime::now();
        let mut f = Fn {
            id: fnrs_model::new_id(),
            name: name.into(),
            app_id: self.app.id.clone(),
            image: "fake:hello".into(),
            format: None,
            memory: 128,
            timeout: 30,
            idle_timeout: 30,
            config: Default::default(),
            annotations: Default::default(),
            shape: String::new(),
            created_at: now,
            updated_at: now,
        };
        tweak(&mut f);
        self.store.insert_fn(&f).await.unwrap();
        Arc::new(f)
    }

    fn call(&self, func: &Arc<Fn>, body: &str, detached: bool) -> InvokeCall {
        InvokeCall {
            app: self.app.clone(),
            func: func.clone(),
            trigger: None,
            method: http::Method::POST,
            url: format!("http://127.0.0.1/invoke/{}", func.id),
            headers: http::HeaderMap::new(),
            body: full_body(Bytes::from(body.to_string())) as BoxBody,
            detached,
        }
    }

    /// Status, call id and body of one call.
    async fn invoke(&self, func: &Arc<Fn>, body: &str) -> (u16, String, String) {
        match self.agent.invoke(self.call(func, body, false)).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let id = resp.headers()["fn-call-id"].to_str().unwrap().to_string();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, id, String::from_utf8_lossy(&body).to_string())
            }
            Err(e) => (
                e.error.status,
                e.call_id.unwrap_or_default(),
                e.error.message.to_string(),
            ),
        }
    }

    /// Wait (bounded) until the live instance count is `n`.
    async fn until_instances(&self, n: usize) -> usize {
        for _ in 0..200 {
            if self.agent.instance_count() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.agent.instance_count()
    }
}

#[tokio::test]
async fn hot_instance_is_reused_and_answers_carry_the_call_id() {
    let s = setup(Mode::Serve, |_| {}).await;
    let f = s.func("f", |_| {}).await;
    let (st1, id1, body1) = s.invoke(&f, "one").await;
    let (st2, id2, body2) = s.invoke(&f, "two").await;
    assert_eq!((st1, st2), (200, 200));
    assert_eq!(body1, format!("{id1} one"));
    assert_eq!(body2, format!("{id2} two"));
    assert_ne!(id1, id2);
    assert_eq!(id1.len(), 26);
    assert_eq!(
        s.driver.started.load(Ordering::SeqCst),
        1,
        "second call reused the hot instance"
    );
}

#[tokio::test]
async fn parallel_calls_start_parallel_instances_then_reuse_them() {
    let s = Arc::new(setup(Mode::Serve, |_| {}).await);
    let f = s.func("f", |_| {}).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        let f = f.clone();
        tasks.push(tokio::spawn(
            async move { s.invoke(&f, "sleep 300").await.0 },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(s.driver.started.load(Ordering::SeqCst), 4);
    for _ in 0..3 {
        assert_eq!(s.invoke(&f, "again").await.0, 200);
    }
    assert_eq!(
        s.driver.started.load(Ordering::SeqCst),
        4,
        "idle instances were reused"
    );
    assert_eq!(s.until_instances(4).await, 4);
}

#[tokio::test]
async fn idle_instances_end_after_idle_timeout() {
    let s = setup(Mode::Serve, |_| {}).await;
    let f = s.func("f", |f| f.idle_timeout = 1).await;
    assert_eq!(s.invoke(&f, "x").await.0, 200);
    assert_eq!(s.agent.instance_count(), 1);
    assert_eq!(s.until_instances(0).await, 0, "idle instance ended");
    assert_eq!(s.invoke(&f, "y").await.0, 200);
    assert_eq!(s.driver.started.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn timeout_answers_504_and_ends_the_instance() {
    let s = setup(Mode::Serve, |_| {}).await;
    let f = s.func("f", |f| f.timeout = 1).await;
    let (status, id, msg) = s.invoke(&f, "sleep 3000").await;
    assert_eq!((status, msg.as_str()), (504, "Timed out"));
    assert_eq!(id.len(), 26, "errors after the call started carry its id");
    assert_eq!(s.until_instances(0).await, 0);
    assert_eq!(s.invoke(&f, "ok").await.0, 200);
    assert_eq!(s.driver.started.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn init_timeout_and_init_failure() {
    let s = setup(Mode::Silent, |c| {
        c.hot_start_timeout = Duration::from_millis(300)
    })
    .await;
    let f = s.func("f", |_| {}).await;
    let (status, _, msg) = s.invoke(&f, "x").await;
    assert_eq!(status, 504);
    assert!(
        msg.starts_with("Container initialization timed out"),
        "{msg}"
    );
    assert_eq!(s.until_instances(0).await, 0);

    let s = setup(Mode::Crash, |_| {}).await;
    let f = s.func("f", |_| {}).await;
    let (status, _, msg) = s.invoke(&f, "x").await;
    assert_eq!(status, 502);
    assert!(msg.starts_with("Container failed to initialize"), "{msg}");
    assert_eq!(s.until_instances(0).await, 0);
}

#[tokio::test]
async fn memory_that_can_never_fit_is_400() {
    let s = setup(Mode::Serve, |c| c.max_total_memory = Some(256 << 20)).await;
    let f = s.func("big", |f| f.memory = 512).await;
    let (status, id, msg) = s.invoke(&f, "x").await;
    assert_eq!(
        (status, msg.as_str()),
        (400, "Requested CPU/Memory cannot be allocated")
    );
    assert!(id.is_empty(), "no call is made");
}

#[tokio::test]
async fn busy_server_answers_503_after_the_queue_wait() {
    let s = Arc::new(
        setup(Mode::Serve, |c| {
            c.max_total_memory = Some(128 << 20);
            c.max_queue_wait = Duration::from_millis(200);
        })
        .await,
    );
    let f = s.func("f", |_| {}).await;
    let busy = {
        let s = s.clone();
        let f = f.clone();
        tokio::spawn(async move { s.invoke(&f, "sleep 1500").await.0 })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, msg) = s.invoke(&f, "x").await;
    assert_eq!((status, msg.as_str()), (503, "Timed out - server too busy"));
    assert_eq!(busy.await.unwrap(), 200);
}

#[tokio::test]
async fn idle_instances_of_other_fns_are_evicted_for_room() {
    let s = setup(Mode::Serve, |c| c.max_total_memory = Some(128 << 20)).await;
    let a = s.func("a", |_| {}).await;
    let b = s.func("b", |_| {}).await;
    assert_eq!(s.invoke(&a, "x").await.0, 200);
    assert_eq!(
        s.invoke(&b, "y").await.0,
        200,
        "a's idle instance made room"
    );
    assert_eq!(s.until_instances(1).await, 1);
}

#[tokio::test]
async fn records_and_logs_are_kept() {
    let s = setup(Mode::Serve, |_| {}).await;
    let f = s.func("f", |_| {}).await;
    let (status, id, _) = s.invoke(&f, "hello log").await;
    assert_eq!(status, 200);
    let mut call = None;
    for _ in 0..100 {
        if let Ok(c) = s.store.get_call(&f.id, &id).await
            && c.status.is_final()
        {
            call = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = call.expect("call record written");
    assert_eq!(call.status, CallStatus::Success);
    assert_eq!(call.http_status, Some(200));
    assert!(call.started_at.is_some() && call.completed_at.is_some());
    let mut log = Vec::new();
    for _ in 0..100 {
        if let Ok(l) = s.store.get_log(&id).await
            && !l.is_empty()
        {
            log = l;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(String::from_utf8_lossy(&log), "got hello log\n");
    let calls = s
        .store
        .list_calls(&CallFilter {
            fn_id: f.id.clone(),
            cursor: None,
            per_page: 10,
        })
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn detached_calls_answer_202_then_run() {
    let s = setup(Mode::Serve, |_| {}).await;
    let f = s.func("f", |_| {}).await;
    let resp = s.agent.invoke(s.call(&f, "bg", true)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.headers()["fn-call-id"].to_str().unwrap().to_string();
    let mut done = None;
    for _ in 0..200 {
        if let Ok(c) = s.store.get_call(&f.id, &id).await
            && c.status.is_final()
        {
            done = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = done.expect("detached call ran");
    assert_eq!(call.status, CallStatus::Success);
    for _ in 0..100 {
        if s.store.list_pending().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.store.list_pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn pending_calls_left_by_a_stopped_server_run_on_resume() {
    let s = setup(Mode::Serve, |_| {}).await;
    let f = s.func("f", |_| {}).await;
    let call_id = fnrs_model::new_id();
    let record = fnrs_model::Call {
        id: call_id.clone(),
        status: CallStatus::Queued,
        kind: fnrs_model::CallType::Detached,
        app_id: s.app.id.clone(),
        fn_id: f.id.clone(),
        trigger_id: None,
        method: "POST".into(),
        url: "http://127.0.0.1/invoke/x".into(),
        created_at: DateTime::now(),
        started_at: None,
        completed_at: None,
        http_status: None,
        error: None,
        stats: Default::default(),
    };
    let pending = PendingCall {
        call_id: call_id.clone(),
        fn_id: f.id.clone(),
        trigger_id: None,
        method: "POST".into(),
        url: "http://127.0.0.1/invoke/x".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"resumed".to_vec(),
        attempts: 0,
    };
    s.store.insert_pending(&record, &pending).await.unwrap();
    assert_eq!(s.agent.resume_pending().await.unwrap(), 1);
    let mut done = None;
    for _ in 0..200 {
        if let Ok(c) = s.store.get_call(&f.id, &call_id).await
            && c.status.is_final()
        {
            done = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = done.expect("resumed call ran");
    assert_eq!(call.status, CallStatus::Success);
    assert_eq!(call.stats.get("attempts"), Some(&serde_json::json!(2)));
}

#[tokio::test]
async fn shutdown_waits_for_calls_then_ends_every_instance() {
    let s = Arc::new(setup(Mode::Serve, |_| {}).await);
    let f = s.func("f", |_| {}).await;
    let call = {
        let s = s.clone();
        let f = f.clone();
        tokio::spawn(async move { s.invoke(&f, "sleep 300").await.0 })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.agent.shutdown(Duration::from_secs(10)).await;
    assert_eq!(call.await.unwrap(), 200, "in-flight call finished");
    assert_eq!(s.agent.instance_count(), 0);
    let (status, _, _) = s.invoke(&f, "late").await;
    assert_eq!(status, 503, "no calls after shutdown");
    assert_eq!(
        std::fs::read_dir(s._iofs.path().join("fnrs"))
            .unwrap()
            .count(),
        0,
        "iofs area removed"
    );
}
