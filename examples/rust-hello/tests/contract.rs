//! The built example binary serves the http-stream contract as a real
//! process: readiness symlink, plain and gateway calls, failure, and cleanup
//! on SIGTERM.

use std::time::Duration;

use fnrs_protocol::{CallRequest, HttpStreamConn, Limits, full_body};
use http_body_util::BodyExt;

fn request(body: &'static str, gateway: bool) -> CallRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    CallRequest {
        call_id: "01RUSTHELLO".into(),
        deadline: fnrs_model::DateTime::now().plus_secs(30),
        timeout: Duration::from_secs(30),
        method: http::Method::POST,
        url: "http://localhost:8080/t/app/hello".into(),
        headers,
        gateway,
        body: full_body(body),
    }
}

#[tokio::test]
async fn serves_the_contract_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lsnr.sock");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rust-hello"))
        .env_clear()
        .env("FN_FORMAT", "http-stream")
        .env("FN_LISTENER", format!("unix:{}", sock.display()))
        .env("FN_APP_ID", "01APP")
        .env("FN_FN_ID", "01FN")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::fs::symlink_metadata(&sock).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        std::fs::read_link(&sock).unwrap().to_str(),
        Some("phonylsnr.sock")
    );
    let mut conn = HttpStreamConn::connect(dir.path(), Limits::default())
        .await
        .unwrap();

    let h = conn
        .call(request(r#"{"name":"Rust"}"#, false))
        .await
        .unwrap();
    assert_eq!(h.response.status(), 200);
    assert_eq!(h.response.headers()["x-custom"], "yes");
    let body = h.response.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["message"], "Hello Rust");
    assert_eq!(v["call_id"], "01RUSTHELLO");
    assert_eq!(
        (v["fn_id"].as_str(), v["app_id"].as_str()),
        (Some("01FN"), Some("01APP"))
    );

    let h = conn
        .call(request(r#"{"name":"Gw","status":404}"#, true))
        .await
        .unwrap();
    assert_eq!(h.response.status(), 404);
    assert_eq!(h.response.headers()["location"], "/elsewhere");

    let e = conn
        .call(request(r#"{"name":"boom"}"#, false))
        .await
        .unwrap_err();
    assert_eq!(
        (e.error.status, &*e.error.message),
        (502, "function failed")
    );

    let pid = child.id().unwrap().to_string();
    let st = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "symlink removed on SIGTERM"
    );
    assert!(
        !dir.path().join("phonylsnr.sock").exists(),
        "socket removed on SIGTERM"
    );
}

#[tokio::test]
async fn refuses_a_wrong_format() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rust-hello"))
        .env_clear()
        .env("FN_FORMAT", "json")
        .env("FN_LISTENER", "unix:/tmp/nowhere/lsnr.sock")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("incompatible function format"));
}
