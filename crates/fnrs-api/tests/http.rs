//! The HTTP side of invoking, and the calls and logs API, in process over a
//! real socket: a test invoker echoes what it was handed (a double for the
//! agent, which has its own tests), the store is the in-memory one.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fnrs_api::{
    ApiConfig, ApiState, BoxBody, InvokeError, InvokeRequest, Invoker, StoreLookup, router,
};
use fnrs_datastore::{Datastore, MemoryStore};
use fnrs_model::{App, Call, CallStatus, CallType, DateTime, Error, Fn, Trigger};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

/// Answers with a JSON description of the request, or with a scripted error,
/// or streams chunks handed to it through a channel.
#[derive(Default)]
struct TestInvoker {
    stream: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

#[async_trait]
impl Invoker for TestInvoker {
    async fn invoke(&self, req: InvokeRequest) -> Result<http::Response<BoxBody>, InvokeError> {
        if let Some(e) = req.headers.get("x-fail") {
            let status: u16 = e.to_str().unwrap().parse().unwrap();
            return Err(InvokeError {
                call_id: Some("CALL123".into()),
                error: Error::with_message(status, "scripted failure"),
            });
        }
        if req.headers.contains_key("x-stream") {
            let rx = self.stream.lock().await.take().expect("a stream");
            let s = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| {
                    (
                        Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)),
                        rx,
                    )
                })
            });
            let body = http_body_util::StreamBody::new(s)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { match e {} })
                .boxed_unsync();
            return Ok(http::Response::builder()
                .header("fn-call-id", "STREAM1")
                .body(body)
                .unwrap());
        }
        let body = req
            .body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| InvokeError {
                call_id: None,
                error: Error::with_message(413, e.to_string()),
            })?;
        let echo = json!({
            "app": req.app.name, "fn": req.func.name,
            "trigger": req.trigger.as_ref().map(|t| t.source.clone()),
            "method": req.method.as_str(), "url": req.url, "detached": req.detached,
            "content_type": req.headers.get("content-type").map(|v| v.to_str().unwrap()),
            "body": String::from_utf8_lossy(&body),
        });
        let b = http_body_util::Full::new(Bytes::from(echo.to_string()))
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { match e {} })
            .boxed_unsync();
        Ok(http::Response::builder()
            .status(201)
            .header("fn-call-id", "ECHO1")
            .body(b)
            .unwrap())
    }

    async fn health(&self) -> Value {
        json!({"test": true})
    }
}

struct Env {
    base: String,
    store: Arc<MemoryStore>,
    invoker: Arc<TestInvoker>,
    http: reqwest::Client,
    _task: tokio::task::JoinHandle<()>,
}

async fn start(max_request_size: u64) -> Env {
    let store = Arc::new(MemoryStore::new());
    let invoker = Arc::new(TestInvoker::default());
    let dyn_store: Arc<dyn Datastore> = store.clone();
    let state = Arc::new(ApiState {
        store: dyn_store.clone(),
        lookup: Arc::new(StoreLookup(dyn_store)),
        invoker: invoker.clone(),
        config: ApiConfig {
            max_request_size,
            ..Default::default()
        },
        ids: Arc::new(fnrs_model::IdGenerator::new(7)),
        metrics: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    Env {
        base,
        store,
        invoker,
        http: reqwest::Client::new(),
        _task: task,
    }
}

async fn seed(store: &MemoryStore) -> (App, Fn, Trigger) {
    let now = DateTime::now();
    let app = App {
        id: "APP1".into(),
        name: "myapp".into(),
        config: Default::default(),
        annotations: Default::default(),
        syslog_url: None,
        shape: String::new(),
        created_at: now,
        updated_at: now,
    };
    store.insert_app(&app).await.unwrap();
    let f = Fn {
        id: "FN1".into(),
        name: "myfn".into(),
        app_id: app.id.clone(),
        image: "img".into(),
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
    store.insert_fn(&f).await.unwrap();
    let mut triggers = Vec::new();
    for (id, name, source) in [("TR1", "deep", "/x/y"), ("TR2", "root", "/")] {
        let t = Trigger {
            id: id.into(),
            name: name.into(),
            app_id: app.id.clone(),
            fn_id: f.id.clone(),
            created_at: now,
            updated_at: now,
            kind: "http".into(),
            source: source.into(),
            annotations: Default::default(),
        };
        store.insert_trigger(&t).await.unwrap();
        triggers.push(t);
    }
    (app, f, triggers.remove(0))
}

#[tokio::test]
async fn invoke_hands_the_request_to_the_invoker() {
    let env = start(0).await;
    seed(&env.store).await;
    let r = env
        .http
        .post(format!("{}/invoke/FN1?a=1", env.base))
        .header("content-type", "text/plain")
        .header("fn-invoke-type", "detached")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["fn-call-id"], "ECHO1");
    let v: Value = r.json().await.unwrap();
    let host = env.base.trim_start_matches("http://");
    assert_eq!(
        v,
        json!({"app": "myapp", "fn": "myfn", "trigger": null, "method": "POST",
               "url": format!("http://{host}/invoke/FN1?a=1"), "detached": true,
               "content_type": "text/plain", "body": "hello"})
    );
}

#[tokio::test]
async fn invoke_lookups_are_404() {
    let env = start(0).await;
    seed(&env.store).await;
    let r = env
        .http
        .post(format!("{}/invoke/NOPE", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "{\"message\":\"Fn not found\"}\n");
    let r = env
        .http
        .get(format!("{}/invoke/FN1", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn triggers_map_paths_to_sources() {
    let env = start(0).await;
    seed(&env.store).await;
    for (method, path, source) in [
        ("PUT", "/t/myapp/x/y?q=1", "/x/y"),
        ("GET", "/t/myapp", "/"),
        ("DELETE", "/t/myapp/", "/"),
    ] {
        let r = env
            .http
            .request(method.parse().unwrap(), format!("{}{path}", env.base))
            .header("fn-invoke-type", "detached")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["trigger"], source, "{path}");
        assert_eq!(v["method"], method);
        assert_eq!(v["detached"], false, "only /invoke can be detached");
        assert!(v["url"].as_str().unwrap().ends_with(path));
    }
    for (path, msg) in [
        ("/t/other/x/y", "App not found"),
        ("/t/myapp/x", "Trigger not found"),
        ("/t/myapp/x/y/", "Trigger not found"),
    ] {
        let r = env
            .http
            .get(format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["message"], msg, "{path}");
    }
}

#[tokio::test]
async fn invoke_errors_carry_call_id_and_retry_after() {
    let env = start(0).await;
    seed(&env.store).await;
    let r = env
        .http
        .post(format!("{}/invoke/FN1", env.base))
        .header("x-fail", "503")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["fn-call-id"], "CALL123");
    assert_eq!(r.headers()["retry-after"], "15");
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        r.text().await.unwrap(),
        "{\"message\":\"scripted failure\"}\n"
    );
    let r = env
        .http
        .get(format!("{}/t/myapp/x/y", env.base))
        .header("x-fail", "502")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["fn-call-id"], "CALL123");
    assert!(r.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn responses_stream_as_they_come() {
    let env = start(0).await;
    seed(&env.store).await;
    let (tx, rx) = mpsc::channel(4);
    *env.invoker.stream.lock().await = Some(rx);
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let mut r = env
        .http
        .post(format!("{}/invoke/FN1", env.base))
        .header("x-stream", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["fn-call-id"], "STREAM1");
    // The first chunk arrives while the function has not finished: nothing
    // waits for the whole body.
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first");
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"second");
}

#[tokio::test]
async fn invoke_body_limit() {
    let env = start(10).await;
    seed(&env.store).await;
    let r = env
        .http
        .post(format!("{}/invoke/FN1", env.base))
        .body("0123456789abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"message\":\"Content-Length too large for this server, 13 \\u003e max 10\"}\n"
    );
    let r = env
        .http
        .post(format!("{}/invoke/FN1", env.base))
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

fn call(id: &str, status: CallStatus) -> Call {
    Call {
        id: id.into(),
        status,
        kind: CallType::Sync,
        app_id: "APP1".into(),
        fn_id: "FN1".into(),
        trigger_id: None,
        method: "POST".into(),
        url: "http://h/invoke/FN1".into(),
        created_at: DateTime::from_millis(1_555_000_000_000),
        started_at: None,
        completed_at: None,
        http_status: Some(200),
        error: None,
        stats: Default::default(),
    }
}

#[tokio::test]
async fn calls_and_logs() {
    let env = start(0).await;
    seed(&env.store).await;
    let calls: Vec<Call> = (1..=5)
        .map(|i| call(&format!("C{i}"), CallStatus::Success))
        .collect();
    env.store.put_calls(&calls).await.unwrap();
    env.store
        .put_logs(&[("C2".into(), "FN1".into(), b"line one\nline two\n".to_vec())])
        .await
        .unwrap();
    let get = |p: String| {
        let http = env.http.clone();
        let base = env.base.clone();
        async move { http.get(format!("{base}{p}")).send().await.unwrap() }
    };
    let r = get("/v2/fns/FN1/calls?per_page=2".into()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["C5", "C4"], "newest first");
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let v: Value = get(format!("/v2/fns/FN1/calls?per_page=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["C3", "C2"]);

    let v: Value = get("/v2/fns/FN1/calls/C3".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "C3");
    assert_eq!(v["status"], "success");
    assert_eq!(v["created_at"], "2019-04-11T16:26:40.000Z");

    let r = get("/v2/fns/FN1/calls/C2/log".into()).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "line one\nline two\n");
    // Asking for JSON gets Fn 2018's wrapper.
    let r = env
        .http
        .get(format!("{}/v2/fns/FN1/calls/C2/log", env.base))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"message": "Successfully loaded log", "log": {"call_id": "C2", "log": "line one\nline two\n"}})
    );

    // A call that wrote nothing (no stored log) has an empty log.
    let r = get("/v2/fns/FN1/calls/C1/log".into()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");

    for (p, msg) in [
        ("/v2/fns/NOPE/calls", "Fn not found"),
        ("/v2/fns/FN1/calls/NOPE", "Call not found"),
        ("/v2/fns/FN1/calls/NOPE/log", "Call not found"),
        ("/v2/fns/NOPE/calls/C1/log", "Fn not found"),
    ] {
        let r = get(p.into()).await;
        assert_eq!(r.status(), 404, "{p}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["message"], msg, "{p}");
    }
}

#[tokio::test]
async fn health_shows_the_invoker() {
    let env = start(0).await;
    let v: Value = env
        .http
        .get(format!("{}/health", env.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["invoker"], json!({"test": true}));
}
