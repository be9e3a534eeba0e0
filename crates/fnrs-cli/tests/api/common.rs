//! Helpers: a `fnrs serve` per test on SQLite or PostgreSQL, and a small
//! HTTP client that returns (status, JSON).

use fnrs_testkit::server::{ServerOptions, TestServer};
use serde_json::{Value, json};

/// Which datastore the server under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server under test and a client for it.
pub struct Srv {
    pub server: TestServer,
    pub http: reqwest::Client,
    /// Keeps a throw-away PostgreSQL database alive for the server.
    _pg: Option<fnrs_testkit::pg::TempPostgres>,
}

/// Generates `sqlite` and `postgres` tests for each async fn taking a [`Backend`].
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name($crate::common::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name($crate::common::Backend::Postgres).await }
        }
    )* };
}

pub const BIN: &str = env!("CARGO_BIN_EXE_fnrs");

impl Srv {
    pub async fn start(b: Backend) -> Self {
        Self::start_with(b, ServerOptions::default()).await
    }

    pub async fn start_with(b: Backend, mut opts: ServerOptions) -> Self {
        let pg = match b {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = tokio::task::spawn_blocking(fnrs_testkit::pg::TempPostgres::start)
                    .await
                    .expect("joined")
                    .expect("a throw-away PostgreSQL database");
                opts.db_url = Some(db.url.clone());
                Some(db)
            }
        };
        let server = TestServer::start(BIN, opts).await.expect("fnrs starts");
        Self {
            server,
            http: reqwest::Client::new(),
            _pg: pg,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// Sends a request with an optional JSON body; returns status and JSON (Null if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, self.url(path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Sends a raw body.
    pub async fn raw(&self, method: &str, path: &str, body: &str) -> reqwest::Response {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.http
            .request(m, self.url(path))
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None).await
    }

    /// Creates an app; panics unless 200.
    pub async fn app(&self, name: &str) -> Value {
        let (s, v) = self.post("/v2/apps", json!({ "name": name })).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Creates a fn; panics unless 200.
    pub async fn func(&self, app_id: &str, name: &str) -> Value {
        let (s, v) = self
            .post(
                "/v2/fns",
                json!({ "app_id": app_id, "name": name, "image": "fnproject/hello" }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Creates an HTTP trigger; panics unless 200.
    pub async fn trigger(&self, app_id: &str, fn_id: &str, name: &str, source: &str) -> Value {
        let (s, v) = self
            .post(
                "/v2/triggers",
                json!({ "app_id": app_id, "fn_id": fn_id, "name": name, "type": "http", "source": source }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// App, fn and trigger ids of a fresh app "a" with fn "f" and trigger "t" on "/t".
    pub async fn app_fn_trigger(&self) -> (String, String, String) {
        let a = id(&self.app("a").await);
        let f = id(&self.func(&a, "f").await);
        let t = id(&self.trigger(&a, &f, "t", "/t").await);
        (a, f, t)
    }
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// Asserts Fn's error answer.
#[track_caller]
pub fn err(got: (u16, Value), status: u16, message: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1, json!({ "message": message }));
}

/// Writes `request` on a new connection and reads until the server closes it
/// (at most 10 s); returns what came back.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    c.write_all(request).await.expect("request written");
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("the server closes the connection within 10 s")
        .expect("answer read");
    String::from_utf8_lossy(&out).into_owned()
}
