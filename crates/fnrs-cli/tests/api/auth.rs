//! `FN_API_TOKEN`: the management API needs `Authorization: Bearer <token>`;
//! `/`, `/version` and `/health` stay open; the server refuses to serve an
//! unauthenticated API beyond loopback unless told to.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fnrs_testkit::server::ServerOptions;
use serde_json::json;

use crate::common::*;

const TOKEN: &str = "s3cret-T0ken_for.tests";
const UNAUTHORIZED: &str = "Invalid or missing authorization token";

async fn status_with(s: &Srv, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s.http.request(m, s.url(path));
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    if method == "POST" {
        r = r.json(&json!({"name": "a"}));
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    if status == 401 {
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{method} {path}"
        );
    }
    (status, resp.text().await.unwrap())
}

async fn check_guarded(s: &Srv, token: &str) {
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    let guarded = [
        ("GET", "/v2/apps"),
        ("POST", "/v2/apps"),
        ("GET", "/v2/fns?app_id=x"),
        ("GET", "/v2/triggers?app_id=x"),
        ("GET", "/v2/openapi.json"),
        ("GET", "/metrics"),
    ];
    for (m, p) in guarded {
        for auth in [None, Some(wrong.as_str()), Some(token), Some("Basic abc")] {
            let (st, body) = status_with(s, m, p, auth).await;
            assert_eq!(st, 401, "{m} {p} {auth:?}: {body}");
            assert_eq!(
                body,
                format!("{{\"message\":\"{UNAUTHORIZED}\"}}\n"),
                "{m} {p}"
            );
        }
    }
    let listed = client_with(token)
        .get(s.url("/v2/apps"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.json::<serde_json::Value>().await.unwrap(),
        json!({"items": []}),
        "nothing was created"
    );
    for (m, p) in guarded {
        let (st, body) = status_with(s, m, p, Some(&bearer)).await;
        assert_eq!(st, 200, "{m} {p}: {body}");
    }
    // The scheme is case-insensitive.
    let (st, _) = status_with(s, "GET", "/v2/apps", Some(&format!("bearer {token}"))).await;
    assert_eq!(st, 200);
    for open in ["/", "/version", "/health"] {
        assert_eq!(status_with(s, "GET", open, None).await.0, 200, "{open}");
    }
}

/// A client that sends the token on every request.
fn client_with(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_guards_the_management_api_and_metrics() {
    let mut s = Srv::start_with(
        Backend::Sqlite,
        ServerOptions::default().env("FN_API_TOKEN", TOKEN),
    )
    .await;
    let plain = s.http.clone();
    s.http = client_with(TOKEN);
    assert_eq!(s.get("/v2/apps").await.0, 200);
    s.http = plain;
    check_guarded(&s, TOKEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let s = Srv::start_with(
        Backend::Sqlite,
        ServerOptions::default().env("FN_API_TOKEN_FILE", file.to_str().unwrap()),
    )
    .await;
    check_guarded(&s, TOKEN).await;
}

/// `fnrs serve` as a child with its output captured.
struct Child {
    child: std::process::Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    _data: tempfile::TempDir,
}

fn spawn_serve(env: &[(&str, &str)]) -> Child {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(data.path())
        .env_remove("FN_API_TOKEN")
        .env_remove("FN_API_TOKEN_FILE")
        .env_remove("FN_API_ALLOW_UNAUTHENTICATED")
        .env("FN_PORT", "0")
        .env(
            "FN_DB_URL",
            format!("sqlite3://{}", data.path().join("fn.db").display()),
        )
        .env("FN_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let lines = |out: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                eprintln!("[fnrs] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().unwrap()));
    let stderr = lines(Box::new(child.stderr.take().unwrap()));
    Child {
        child,
        stdout,
        stderr,
        _data: data,
    }
}

impl Child {
    /// Waits (at most 30 s) for the process to exit by itself; kills it
    /// otherwise. Returns whether it exited by itself, and its success.
    fn wait_exit(&mut self) -> Option<bool> {
        for _ in 0..300 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.success());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// The address line printed once listening (at most 30 s).
    fn listening(&self) -> Option<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(l) if l.starts_with("fnrs listening on ") => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// SIGTERM, then everything it wrote on stderr.
    fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = self.wait_exit();
        assert_eq!(exited, Some(true), "stops cleanly on SIGTERM");
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// `GET path` with a bearer token over a new connection; the whole answer.
fn get_on(addr: &str, path: &str, token: &str) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn an_unauthenticated_api_beyond_loopback_is_refused_at_start() {
    let mut c = spawn_serve(&[("FN_LISTEN", "0.0.0.0")]);
    assert_eq!(c.wait_exit(), Some(false), "exits with an error");
    let err = c.stderr.try_iter().collect::<Vec<_>>().join("\n");
    assert!(
        err.contains("FN_API_TOKEN") && err.contains("FN_API_ALLOW_UNAUTHENTICATED=true"),
        "{err}"
    );
}

#[test]
fn an_unauthenticated_api_beyond_loopback_when_asked_for_is_served_with_a_warning() {
    let c = spawn_serve(&[
        ("FN_LISTEN", "0.0.0.0"),
        ("FN_API_ALLOW_UNAUTHENTICATED", "true"),
    ]);
    let line = c.listening().expect("listens");
    assert!(line.starts_with("fnrs listening on 0.0.0.0:"), "{line}");
    let err = c.stop();
    assert!(
        err.contains("WARN") && err.contains("unauthenticated"),
        "{err}"
    );
    // With a token there is nothing to warn about, and the token is never
    // written to the log, whether it is sent right or wrong.
    let c = spawn_serve(&[("FN_LISTEN", "0.0.0.0"), ("FN_API_TOKEN", TOKEN)]);
    let line = c.listening().expect("listens");
    let port = line.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    for (auth, status) in [(TOKEN.to_owned(), "200"), (format!("{TOKEN}x"), "401")] {
        let answer = get_on(&local, "/v2/apps", &auth);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
    }
    let err = c.stop();
    assert!(!err.contains("unauthenticated"), "{err}");
    assert!(!err.contains(TOKEN), "the token is not logged: {err}");
}
