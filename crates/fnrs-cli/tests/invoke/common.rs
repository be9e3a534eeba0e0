//! Helpers: a server per test with its own iofs area, fns deployed from
//! directories, calls, and checks that nothing is left behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fnrs_testkit::server::{ServerOptions, TestServer};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_fnrs");

/// The repository's `examples/` directory.
pub fn example(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    dir.canonicalize()
        .unwrap_or_else(|e| panic!("example {name}: {e} (run scripts/setup-examples.sh)"))
}

/// The venv with the Python FDK that `scripts/test.sh` prepares.
pub fn py_venv() -> PathBuf {
    let v = std::env::var("FNRS_TEST_PY_VENV").expect(
        "FNRS_TEST_PY_VENV must name a venv of /usr/bin/python3 with `fdk` installed (scripts/test.sh makes one)",
    );
    PathBuf::from(v)
}

/// A function written by a test into a directory the sandbox user can read.
pub struct FnDir {
    pub dir: tempfile::TempDir,
}

impl FnDir {
    /// `files`: (name, content); `func.yaml` is written from `entrypoint`/`format`.
    pub fn new(entrypoint: &str, format: &str, files: &[(&str, &str)]) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("fnrs-fn-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("func.yaml"),
            format!(
                "schema_version: 20180708\nname: t\nversion: 0.0.1\nentrypoint: {entrypoint}\nformat: {format}\n"
            ),
        )
        .unwrap();
        for (name, content) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { dir }
    }

    pub fn image(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}

/// A Python FDK function whose handler is `body` (indented 4 spaces).
pub fn py_fn(handler_body: &str) -> FnDir {
    let venv = py_venv();
    let src = format!(
        "import io, json, logging, os, sys, time\nfrom fdk import response\n\ndef handler(ctx, data: io.BytesIO = None):\n{handler_body}\n"
    );
    let launch = format!(
        "#!/bin/sh\nexec {py} {fdk} /function/func.py handler\n",
        py = venv.join("bin/python3").display(),
        fdk = venv.join("bin/fdk").display()
    );
    FnDir::new(
        "./launch.sh",
        "http-stream",
        &[("func.py", &src), ("launch.sh", &launch)],
    )
}

/// A fresh directory for a server's `FN_IOFS_PATH`.
pub fn iofs_base() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let iofs = tempfile::Builder::new()
        .prefix("fnrs-iofs-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(iofs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    iofs
}

/// A server under test, with its own iofs area (so tests can check it).
pub struct Srv {
    pub server: TestServer,
    pub http: reqwest::Client,
    pub iofs: tempfile::TempDir,
    pub app_id: String,
    /// `FN_API_TOKEN` of the server, sent by [`Srv::json`].
    pub api_token: Option<String>,
}

impl Srv {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_bin_in(Path::new(BIN), iofs_base(), env).await
    }

    /// [`Srv::start_with`] through another program (e.g. a wrapper that
    /// execs [`BIN`]).
    pub async fn start_bin_with(bin: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_bin_in(bin, iofs_base(), env).await
    }

    /// With `FN_IOFS_PATH` set to `iofs` (see [`iofs_base`]).
    pub async fn start_in(iofs: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        Self::start_bin_in(Path::new(BIN), iofs, env).await
    }

    async fn start_bin_in(bin: &Path, iofs: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut opts = ServerOptions::default()
            .env("FN_IOFS_PATH", &iofs.path().display().to_string())
            .env("FN_LOG_LEVEL", "debug,sqlx=warn,bollard=info");
        // Test functions run the FDK from the shared venv: let the sandbox see it.
        if let Ok(venv) = std::env::var("FNRS_TEST_PY_VENV") {
            opts = opts.env("FN_PROCESS_RO_PATHS", &venv);
        }
        for (k, v) in env {
            opts = opts.env(k, v);
        }
        let server = TestServer::start(bin, opts).await.expect("fnrs starts");
        let api_token = env
            .iter()
            .find(|(k, _)| *k == "FN_API_TOKEN")
            .map(|(_, v)| v.to_string());
        let mut s = Self {
            server,
            http: reqwest::Client::new(),
            iofs,
            app_id: String::new(),
            api_token,
        };
        let (st, app) = s
            .json(
                "POST",
                "/v2/apps",
                Some(json!({"name": "e2e", "config": {"APPVAR": "a1"}})),
            )
            .await;
        assert_eq!(st, 200, "{app}");
        s.app_id = app["id"].as_str().unwrap().to_string();
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// A management request (with the API token, if the server has one).
    pub async fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, self.url(path));
        if let Some(t) = &self.api_token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// Create a fn; returns its id.
    pub async fn func(&self, name: &str, image: &str, extra: Value) -> String {
        let mut body = json!({"app_id": self.app_id, "name": name, "image": image});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (st, f) = self.json("POST", "/v2/fns", Some(body)).await;
        assert_eq!(st, 200, "{f}");
        f["id"].as_str().unwrap().to_string()
    }

    /// Create an HTTP trigger.
    pub async fn trigger(&self, fn_id: &str, name: &str, source: &str) {
        let (st, t) = self
            .json(
                "POST",
                "/v2/triggers",
                Some(json!({"app_id": self.app_id, "fn_id": fn_id, "name": name, "type": "http", "source": source})),
            )
            .await;
        assert_eq!(st, 200, "{t}");
    }

    /// POST /invoke with a body; the whole answer.
    pub async fn invoke(&self, fn_id: &str, body: &str) -> Answer {
        self.send(
            self.http
                .post(self.url(&format!("/invoke/{fn_id}")))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn health(&self) -> Value {
        self.json("GET", "/health", None).await.1
    }

    /// Live instances per /health.
    pub async fn instances(&self) -> u64 {
        self.health().await["invoker"]["instances"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }

    /// Poll (bounded) until the instance count is `n`; returns the last count.
    pub async fn until_instances(&self, n: u64) -> u64 {
        let mut last = self.instances().await;
        for _ in 0..150 {
            if last == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = self.instances().await;
        }
        last
    }

    /// Poll (bounded) for a call record in a final state.
    pub async fn final_call(&self, fn_id: &str, call_id: &str) -> Value {
        for _ in 0..300 {
            let (st, c) = self
                .json("GET", &format!("/v2/fns/{fn_id}/calls/{call_id}"), None)
                .await;
            if st == 200 && !matches!(c["status"].as_str(), Some("queued") | Some("running")) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("call {call_id} never finished");
    }

    /// Poll (bounded) for a call's log containing `needle`.
    pub async fn log_with(&self, fn_id: &str, call_id: &str, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            let resp = self
                .http
                .get(self.url(&format!("/v2/fns/{fn_id}/calls/{call_id}/log")))
                .send()
                .await
                .unwrap();
            if resp.status() == 200 {
                last = resp.text().await.unwrap();
                if last.contains(needle) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("log of {call_id} never contained {needle:?}; last: {last:?}");
    }

    /// Wait (bounded) until the process driver has `n` sandboxes waiting
    /// (its pool's size: then the next start takes one, and no refill races
    /// with a stop).
    pub async fn pool_ready(&self, n: u64) {
        let mut h = Value::Null;
        for _ in 0..300 {
            h = self.health().await;
            let d = &h["invoker"]["drivers"]["process"];
            if d["pool"]["idle"].as_u64().is_some_and(|i| i >= n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no pooled sandbox: {h}");
    }

    pub async fn server_id(&self) -> String {
        self.health().await["invoker"]["server_id"]
            .as_str()
            .expect("server id in /health")
            .to_string()
    }

    /// Stop with SIGTERM and check that no process, iofs dir or cgroup of
    /// this server is left.
    pub async fn stop_and_check_clean(mut self, server_id: &str, fn_dirs: &[&Path]) {
        let status = self.server.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "fnrs exits cleanly on SIGTERM: {status:?}"
        );
        assert_clean(server_id, self.iofs.path(), fn_dirs).await;
    }
}

/// No process runs from the given function dirs, no iofs dir and no cgroup
/// of `server_id` exists.
pub async fn assert_clean(server_id: &str, iofs: &Path, fn_dirs: &[&Path]) {
    let mut leftovers = Vec::new();
    for _ in 0..40 {
        leftovers = processes_using(fn_dirs);
        if leftovers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leftovers.is_empty(), "processes left: {leftovers:?}");
    let server_dir = iofs.join("fnrs").join(server_id);
    assert!(
        !server_dir.exists(),
        "iofs dir left: {}",
        server_dir.display()
    );
    let mut cg = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let p = e.path().join("fnrs").join(server_id);
            if p.exists() {
                cg.push(p);
            }
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/fnrs").join(server_id);
    if v2.exists() {
        cg.push(v2);
    }
    assert!(cg.is_empty(), "cgroups left: {cg:?}");
}

/// Pids whose command line names one of the dirs.
fn processes_using(dirs: &[&Path]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if dirs.iter().any(|d| cmd.contains(&*d.to_string_lossy())) {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn call_id(&self) -> String {
        self.header("fn-call-id")
            .unwrap_or_else(|| panic!("no Fn-Call-Id on {self:?}"))
            .to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}
