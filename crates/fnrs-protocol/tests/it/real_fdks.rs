//! http-stream against the real FDKs from PyPI and npm, started as plain
//! processes on a temp iofs directory, checked against contract §7.
//!
//! Needs `FNRS_TEST_PY_FDK` (the `fdk` console script in a venv made from
//! Debian's python3) and `FNRS_TEST_NODE_MODULES` (a `node_modules` holding
//! `@fnproject/fdk`).

use std::path::Path;
use std::process::Stdio;

use fnrs_protocol::{HttpStreamConn, Limits};
use tokio::process::{Child, Command};

use crate::common::*;

struct Fdk {
    _dir: tempfile::TempDir,
    child: Child,
    conn: HttpStreamConn,
}

async fn start(mut cmd: Command) -> Fdk {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lsnr.sock");
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("FN_FORMAT", "http-stream")
        .env("FN_LISTENER", format!("unix:{}", sock.display()))
        .env("FN_APP_ID", "01APPID")
        .env("FN_FN_ID", "01FNID")
        .env("FN_MEMORY", "128")
        .env("FN_TYPE", "sync")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start the FDK");
    wait_for_socket(dir.path(), &mut child).await;
    let conn = HttpStreamConn::connect(dir.path(), Limits::default())
        .await
        .expect("connect to the FDK");
    Fdk {
        _dir: dir,
        child,
        conn,
    }
}

fn python_fdk() -> Command {
    let fdk = required_env(
        "FNRS_TEST_PY_FDK",
        "set it to <venv>/bin/fdk of a venv made with `/usr/bin/python3 -m venv <venv> && <venv>/bin/pip install fdk`",
    );
    let python = Path::new(&fdk).with_file_name("python3");
    let mut cmd = Command::new(python);
    cmd.arg(&fdk)
        .arg(examples().join("python-hello/func.py"))
        .arg("handler");
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

fn node_fdk() -> Command {
    let modules = required_env(
        "FNRS_TEST_NODE_MODULES",
        "set it to a node_modules dir holding @fnproject/fdk (`npm install @fnproject/fdk`)",
    );
    let mut cmd = Command::new("node");
    cmd.arg(examples().join("node-hello/func.js"))
        .env("NODE_PATH", modules);
    cmd
}

fn json_body(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test]
async fn python_fdk_plain_gateway_and_failure() {
    let mut f = start(python_fdk()).await;
    let dir = f._dir.path();
    assert_eq!(
        std::fs::read_link(dir.join("lsnr.sock")).unwrap().to_str(),
        Some("phonylsnr.sock")
    );

    // Plain invoke (contract §7).
    let h = f
        .conn
        .call(json_request(r#"{"name":"Rust"}"#, false))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["x-custom"], "yes");
    assert!(
        parts.headers["fn-fdk-version"]
            .to_str()
            .unwrap()
            .starts_with("fdk-python/")
    );
    assert!(
        !parts.headers.contains_key("keep-alive"),
        "hop-by-hop answer headers are dropped"
    );
    assert!(!parts.headers.contains_key("connection"));
    let v = json_body(&body);
    assert_eq!(v["message"], "Hello Rust");
    assert_eq!(v["call_id"], "01CALLID0000000000000000000");
    assert_eq!(v["fn_id"], "01FNID");
    assert_eq!(v["app_id"], "01APPID");

    // Gateway (trigger) call: unwrapped.
    let h = f
        .conn
        .call(json_request(r#"{"name":"Gw"}"#, true))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["x-custom"], "yes");
    assert!(!parts.headers.contains_key("fn-fdk-version"));
    assert!(!parts.headers.contains_key("fn-http-status"));
    assert_eq!(json_body(&body)["message"], "Hello Gw");

    // A user status through the gateway.
    let h = f
        .conn
        .call(json_request(r#"{"name":"x","status":404}"#, true))
        .await
        .unwrap();
    let (parts, _, _) = text(h).await;
    assert_eq!(parts.status, 404);
    assert_eq!(parts.headers["location"], "/elsewhere");

    // An exception: 502 "function failed", the instance stays.
    let e = f
        .conn
        .call(json_request(r#"{"name":"boom"}"#, false))
        .await
        .unwrap_err();
    assert_eq!(
        (e.error.status, &*e.error.message, e.instance_ok),
        (502, "function failed", true)
    );
    let e = f
        .conn
        .call(json_request(r#"{"name":"boom"}"#, true))
        .await
        .unwrap_err();
    assert_eq!(e.error.message, "function failed");

    // Still serving, many calls on one instance.
    for i in 0..20 {
        let h = f
            .conn
            .call(json_request(r#"{"name":"again"}"#, i % 2 == 0))
            .await
            .unwrap();
        let (parts, body, o) = text(h).await;
        assert!(o.instance_ok);
        assert_eq!(parts.status, 200);
        assert_eq!(json_body(&body)["message"], "Hello again");
    }
    assert!(f.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn node_fdk_plain_gateway_and_failure() {
    let mut f = start(node_fdk()).await;
    assert_eq!(
        std::fs::read_link(f._dir.path().join("lsnr.sock"))
            .unwrap()
            .to_str(),
        Some("lsnr.sock.tmp")
    );
    let h = f
        .conn
        .call(json_request(r#"{"name":"Node"}"#, false))
        .await
        .unwrap();
    let (parts, body, o) = text(h).await;
    assert!(o.instance_ok);
    assert_eq!(parts.status, 200);
    assert!(
        parts.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        parts.headers["fn-fdk-version"]
            .to_str()
            .unwrap()
            .starts_with("fdk-node/")
    );
    let v = json_body(&body);
    assert_eq!(v["message"], "Hello Node");
    assert_eq!(v["callID"], "01CALLID0000000000000000000");

    let h = f
        .conn
        .call(json_request(r#"{"name":"Gw","status":201}"#, true))
        .await
        .unwrap();
    let (parts, body, _) = text(h).await;
    assert_eq!(parts.status, 201);
    assert_eq!(parts.headers["x-custom"], "yes");
    assert_eq!(json_body(&body)["message"], "Hello Gw");

    let e = f
        .conn
        .call(json_request(r#"{"name":"boom"}"#, false))
        .await
        .unwrap_err();
    assert_eq!(
        (e.error.status, &*e.error.message, e.instance_ok),
        (502, "function failed", true)
    );

    for _ in 0..10 {
        let h = f
            .conn
            .call(json_request(r#"{"name":"again"}"#, false))
            .await
            .unwrap();
        assert_eq!(text(h).await.0.status, 200);
    }
    assert!(f.child.try_wait().unwrap().is_none());
}
