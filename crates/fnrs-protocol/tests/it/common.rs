//! Helpers for the protocol tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fnrs_protocol::{BoxBody, CallHandle, CallRequest, full_body};
use http_body_util::BodyExt;
use tokio::net::{UnixListener, UnixStream};

/// Bound for anything a test waits on: a hang fails the test instead of
/// blocking forever.
pub const GUARD: Duration = Duration::from_secs(30);

pub fn request(body: BoxBody, gateway: bool, timeout: Duration) -> CallRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", "localhost:8080".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("accept", "*/*".parse().unwrap());
    headers.insert("x-my-header", "foo".parse().unwrap());
    headers.insert("connection", "keep-alive".parse().unwrap());
    CallRequest {
        call_id: "01CALLID0000000000000000000".into(),
        deadline: fnrs_model::DateTime::now().plus_secs(timeout.as_secs() as i64),
        timeout,
        method: http::Method::PUT,
        url: "http://localhost:8080/t/myapp/hello?x=1".into(),
        headers,
        gateway,
        body,
    }
}

pub fn json_request(json: &'static str, gateway: bool) -> CallRequest {
    request(full_body(json), gateway, Duration::from_secs(20))
}

/// Read a whole body, failing the test if it takes longer than [`GUARD`].
pub async fn read_all(body: BoxBody) -> Result<Bytes, String> {
    tokio::time::timeout(GUARD, body.collect())
        .await
        .expect("body read hung")
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

/// Await `done`, failing the test if it never fires.
pub async fn outcome(
    h: tokio::sync::oneshot::Receiver<fnrs_protocol::Outcome>,
) -> fnrs_protocol::Outcome {
    tokio::time::timeout(GUARD, h)
        .await
        .expect("done never fired")
        .expect("done dropped without an outcome")
}

pub async fn text(h: CallHandle) -> (http::response::Parts, String, fnrs_protocol::Outcome) {
    let (parts, body) = h.response.into_parts();
    let body = read_all(body).await.expect("body failed");
    let o = outcome(h.done).await;
    (parts, String::from_utf8_lossy(&body).into_owned(), o)
}

/// A hand-written "function" on a phony socket + relative symlink, running
/// `serve` for every connection.
pub struct RawServer {
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    pub fn start<F, Fut>(serve: F) -> RawServer
    where
        F: Fn(UnixStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("phonylsnr.sock")).unwrap();
        std::os::unix::fs::symlink("phonylsnr.sock", dir.path().join("lsnr.sock")).unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(s));
            }
        });
        RawServer { dir, task }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Wait until `<dir>/lsnr.sock` exists (bounded), or the child exits.
pub async fn wait_for_socket(dir: &Path, child: &mut tokio::process::Child) {
    let sock = dir.join("lsnr.sock");
    for _ in 0..300 {
        if std::fs::symlink_metadata(&sock).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("function exited before its socket appeared: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("lsnr.sock did not appear in {}", dir.display());
}

/// The repository's `examples/` directory.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// An env var a test needs; fails loudly when the CI script did not set it.
pub fn required_env(name: &str, how: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: {how}"),
    }
}
