//! The `fnrs` client commands against a running server (assert_cmd).

use assert_cmd::Command;
use serde_json::Value;

use crate::common::*;

/// Runs `fnrs ARGS` against the server; returns (success, stdout, stderr).
async fn fnrs(s: &Srv, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    fnrs_with_token(s, None, args, stdin).await
}

/// [`fnrs`] with `FN_TOKEN` set to `token` (and unset when `None`).
async fn fnrs_with_token(
    s: &Srv,
    token: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let url = s.server.url();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_owned);
    let token = token.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::cargo_bin("fnrs").unwrap();
        cmd.args(&args)
            .env("FN_API_URL", url)
            .env_remove("FN_TOKEN")
            .timeout(std::time::Duration::from_secs(60));
        if let Some(t) = token {
            cmd.env("FN_TOKEN", t);
        }
        cmd.write_stdin(stdin.unwrap_or_default());
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Like Fn's CLI, the client sends `Authorization: Bearer $FN_TOKEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sends_fn_token() {
    let token = "cli-T0ken";
    let s = Srv::start_with(
        Backend::Sqlite,
        fnrs_testkit::server::ServerOptions::default().env("FN_API_TOKEN", token),
    )
    .await;
    let (ok, _, err) = fnrs_with_token(&s, None, &["apps", "create", "a"], None).await;
    assert!(!ok);
    assert!(
        err.contains("Invalid or missing authorization token"),
        "{err}"
    );
    let (ok, _, err) = fnrs_with_token(&s, Some(token), &["apps", "create", "a"], None).await;
    assert!(ok, "{err}");
    let (ok, out, err) = fnrs_with_token(&s, Some(token), &["apps", "list"], None).await;
    assert!(ok && out.contains('a'), "{out} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_apps_crud() {
    let s = Srv::start(Backend::Sqlite).await;
    let (ok, out, err) = fnrs(&s, &["apps", "create", "myapp", "--config", "A=1"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("NAME") && out.contains("myapp"), "{out}");
    let (ok, out, _) = fnrs(&s, &["apps", "list"], None).await;
    assert!(ok && out.contains("myapp"), "{out}");
    let (ok, out, _) = fnrs(&s, &["apps", "get", "myapp", "--json"], None).await;
    assert!(ok);
    let app = json_of(&out);
    assert_eq!(app["config"]["A"], "1");
    let (ok2, out2, _) = fnrs(
        &s,
        &[
            "apps",
            "update",
            "myapp",
            "--json",
            "--config",
            "A=",
            "--config",
            "B=2",
            "--annotation",
            "x={\"y\":1}",
        ],
        None,
    )
    .await;
    assert!(ok2, "{out2}");
    let app = json_of(&out2);
    assert_eq!(app["config"], serde_json::json!({"B": "2"}));
    assert_eq!(app["annotations"]["x"], serde_json::json!({"y": 1}));
    let (ok, out, _) = fnrs(&s, &["apps", "list", "--json"], None).await;
    assert!(ok);
    assert_eq!(json_of(&out).as_array().unwrap().len(), 1);
    let (ok, _, err) = fnrs(&s, &["apps", "create", "myapp"], None).await;
    assert!(!ok);
    assert!(err.contains("App already exists"), "{err}");
    let (ok, _, err) = fnrs(&s, &["apps", "delete", "myapp"], None).await;
    assert!(ok, "{err}");
    let (ok, _, err) = fnrs(&s, &["apps", "get", "myapp"], None).await;
    assert!(!ok);
    assert!(err.contains("App not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_fns_and_triggers() {
    let s = Srv::start(Backend::Sqlite).await;
    assert!(fnrs(&s, &["apps", "create", "a"], None).await.0);
    let (ok, out, err) = fnrs(
        &s,
        &[
            "fns", "create", "a", "f", "img:1", "--memory", "256", "--format", "json", "--json",
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let f = json_of(&out);
    assert_eq!(
        (f["memory"].as_u64(), f["format"].as_str()),
        (Some(256), Some("json"))
    );
    let (ok, out, _) = fnrs(&s, &["fns", "list", "a"], None).await;
    assert!(
        ok && out.contains("img:1") && out.contains("/invoke/"),
        "{out}"
    );
    let (ok, out, _) = fnrs(
        &s,
        &[
            "fns",
            "update",
            "a",
            "f",
            "--image",
            "img:2",
            "--timeout",
            "60",
            "--json",
        ],
        None,
    )
    .await;
    assert!(ok);
    assert_eq!(json_of(&out)["image"], "img:2");
    let (ok, out, _) = fnrs(&s, &["fns", "get", "a", "f", "--json"], None).await;
    assert!(ok);
    assert_eq!(json_of(&out)["timeout"], 60);

    let (ok, out, err) = fnrs(
        &s,
        &[
            "triggers", "create", "a", "f", "t", "--source", "/hello", "--json",
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let t = json_of(&out);
    assert_eq!(
        t["annotations"]["fnproject.io/trigger/httpEndpoint"],
        format!("{}/t/a/hello", s.server.url())
    );
    let (ok, out, _) = fnrs(&s, &["triggers", "list", "a", "--fn", "f"], None).await;
    assert!(ok && out.contains("/hello"), "{out}");
    let (ok, out, _) = fnrs(
        &s,
        &[
            "triggers", "update", "a", "f", "t", "--source", "/bye", "--json",
        ],
        None,
    )
    .await;
    assert!(ok);
    assert_eq!(json_of(&out)["source"], "/bye");
    let (ok, out, _) = fnrs(&s, &["triggers", "get", "a", "f", "t", "--json"], None).await;
    assert!(ok);
    assert_eq!(json_of(&out)["source"], "/bye");
    assert!(
        fnrs(&s, &["triggers", "delete", "a", "f", "t"], None)
            .await
            .0
    );
    let (ok, _, err) = fnrs(&s, &["triggers", "get", "a", "f", "t"], None).await;
    assert!(!ok && err.contains("Trigger not found"), "{err}");
    assert!(fnrs(&s, &["fns", "delete", "a", "f"], None).await.0);
    let (ok, _, err) = fnrs(&s, &["fns", "get", "a", "f"], None).await;
    assert!(!ok && err.contains("Fn not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_fns_error_message_and_fails() {
    let s = Srv::start(Backend::Sqlite).await;
    assert!(fnrs(&s, &["apps", "create", "a"], None).await.0);
    let (ok, out, err) = fnrs(&s, &["fns", "create", "a", "bad/name", "img"], None).await;
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.trim(), "Error: name must be a valid string");
    let (ok, _, err) = fnrs(
        &s,
        &["fns", "create", "a", "f", "img", "--timeout", "999"],
        None,
    )
    .await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error: timeout value is out of range, must be between 0 and 300"
    );
    // An unreachable server is an error too.
    let out = tokio::task::spawn_blocking(|| {
        Command::cargo_bin("fnrs")
            .unwrap()
            .args(["apps", "list", "--api-url", "http://127.0.0.1:9"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploy_creates_then_updates() {
    let s = Srv::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    // The server checks that its sandbox user can read the function's directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("func.yaml"),
        "schema_version: 20180708\nname: hello\nversion: 0.0.1\nruntime: python\nentrypoint: /python/bin/fdk func.py handler\nformat: http-stream\nmemory: 256\ntimeout: 20\nconfig:\n  GREETING: hi\ntriggers:\n- name: hello\n  type: http\n  source: /hello\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let (ok, out, err) = fnrs(&s, &["deploy", &d, "--app", "demo"], None).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{}/invoke/", s.server.url())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/t/demo/hello", s.server.url())),
        "{out}"
    );
    let (ok, out, _) = fnrs(&s, &["fns", "get", "demo", "hello", "--json"], None).await;
    assert!(ok);
    let f = json_of(&out);
    let canon = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(f["image"], format!("file://{}", canon.display()));
    assert_eq!(
        (f["memory"].as_u64(), f["timeout"].as_i64()),
        (Some(256), Some(20))
    );
    assert_eq!(f["config"]["GREETING"], "hi");
    // Deploying again updates in place.
    std::fs::write(
        dir.path().join("func.yaml"),
        "name: hello\nentrypoint: ./run\nmemory: 512\ntriggers:\n- name: hello\n  type: http\n  source: /hi\n",
    )
    .unwrap();
    let (ok, out, err) = fnrs(&s, &["deploy", &d, "--app", "demo", "--json"], None).await;
    assert!(ok, "{err}");
    let v = json_of(&out);
    assert_eq!(v["fn_id"], f["id"]);
    assert_eq!(
        v["triggers"]["hello"],
        format!("{}/t/demo/hi", s.server.url())
    );
    let (_, out, _) = fnrs(&s, &["fns", "get", "demo", "hello", "--json"], None).await;
    assert_eq!(json_of(&out)["memory"], 512);
    // A func.yaml without a command is refused.
    std::fs::write(dir.path().join("func.yaml"), "name: hello\n").unwrap();
    let (ok, _, err) = fnrs(&s, &["deploy", &d, "--app", "demo"], None).await;
    assert!(!ok && err.contains("entrypoint or cmd"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_invoke_calls_logs_report_errors() {
    let s = Srv::start(Backend::Sqlite).await;
    assert!(fnrs(&s, &["apps", "create", "a"], None).await.0);
    assert!(fnrs(&s, &["fns", "create", "a", "f", "img"], None).await.0);
    let (ok, _, err) = fnrs(&s, &["invoke", "a", "nope"], Some("hi")).await;
    assert!(!ok && err.contains("Fn not found"), "{err}");
    let (ok, out, err) = fnrs(&s, &["calls", "a", "f"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("ID") && out.contains("STATUS"), "{out}");
    let (ok, out, _) = fnrs(&s, &["calls", "a", "f", "--json"], None).await;
    assert!(ok);
    assert_eq!(json_of(&out), serde_json::json!([]));
    let (ok, _, err) = fnrs(&s, &["logs", "a", "f", "01NOPE"], None).await;
    assert!(!ok && err.contains("Call not found"), "{err}");
}

#[test]
fn serve_help_lists_every_setting() {
    let out = Command::cargo_bin("fnrs")
        .unwrap()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "FN_PORT",
        "FN_LISTEN",
        "FN_DB_URL",
        "FN_DS_DB_PING_MAX_RETRIES",
        "FN_LOG_LEVEL",
        "FN_LOG_FORMAT",
        "FN_MAX_REQUEST_SIZE",
        "FN_PUBLIC_LB_URL",
        "FN_SHUTDOWN_TIMEOUT",
        "FN_API_CORS_ORIGINS",
        "FN_API_CORS_HEADERS",
    ] {
        assert!(help.contains(var), "{var} missing from serve --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_json_logs_and_bad_db_url() {
    // JSON logs: every stderr line of a server run is a JSON object.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite3://{}/fn.db", dir.path().display());
    let log = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Read};
        let mut child = std::process::Command::new(BIN)
            .args(["serve", "--port", "0", "--db-url", &db])
            .env("FN_LOG_FORMAT", "json")
            .env("FN_LOG_LEVEL", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("fnrs listening on 127.0.0.1:"), "{first}");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(child.wait().unwrap().success());
        log
    })
    .await
    .unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    // A database URL of an unknown kind stops the server with a clear error.
    let out = tokio::task::spawn_blocking(|| {
        Command::cargo_bin("fnrs")
            .unwrap()
            .args([
                "serve",
                "--port",
                "0",
                "--db-url",
                "mysql://x@tcp(h:3306)/db",
            ])
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mysql"), "{err}");
}

/// The whole tour with a real function: deploy the `default-sh` example (a
/// cold shell function), invoke it, read its calls and a failed call's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploy_invoke_calls_logs_end_to_end() {
    let s = Srv::start(Backend::Sqlite).await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/default-sh");
    let (ok, out, err) = fnrs(&s, &["deploy", example, "--app", "tour"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("/invoke/"), "{out}");
    let (ok, out, err) = fnrs(&s, &["invoke", "tour", "default-sh"], Some("world")).await;
    assert!(ok, "{err}");
    assert!(out.contains("Hello from a cold function"), "{out}");
    assert!(out.contains("input=world"), "{out}");
    let (ok, _, err) = fnrs(&s, &["invoke", "tour", "default-sh"], Some("fail")).await;
    assert!(!ok, "a failing function fails the command");
    assert!(err.starts_with("Error: "), "{err}");
    // Call records are written in the background: wait (bounded) for both.
    let mut calls = Value::Null;
    for _ in 0..200 {
        let (ok, out, _) = fnrs(&s, &["calls", "tour", "default-sh", "--json"], None).await;
        assert!(ok);
        calls = json_of(&out);
        let done = calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] != "running" && c["status"] != "queued")
            .count();
        if done == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let calls = calls.as_array().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["status"], "error", "newest first: {calls:?}");
    assert_eq!(calls[1]["status"], "success");
    let failed = calls[0]["id"].as_str().unwrap().to_owned();
    let mut log = String::new();
    for _ in 0..200 {
        let (ok, out, _) = fnrs(&s, &["logs", "tour", "default-sh", &failed], None).await;
        if ok && out.contains("failing as asked") {
            log = out;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(log.contains("failing as asked"), "log of {failed}: {log:?}");
}
