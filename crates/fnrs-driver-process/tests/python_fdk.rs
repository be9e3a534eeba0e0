//! The real Python FDK (PyPI `fdk`) served from inside the sandbox.
//!
//! Needs `FNRS_TEST_PY_VENV`: a venv built from Debian's `/usr/bin/python3`
//! with `fdk` installed (`python3 -m venv DIR && DIR/bin/pip install fdk`), in a
//! directory readable by uid 65534. The test fails when it is missing.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use fnrs_driver::{Driver, IOFS_MOUNT};
use fnrs_driver_process::{ProcessDriver, ProcessDriverConfig, SandboxMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FUNC_PY: &str = r#"import io, json
from fdk import response

def handler(ctx, data: io.BytesIO = None):
    name = json.loads(data.getvalue()).get("name", "World")
    print("log line from func", flush=True)
    return response.Response(ctx, response_data=json.dumps({"message": "Hello " + name}),
                             headers={"Content-Type": "application/json"})
"#;

fn venv() -> PathBuf {
    let v = std::env::var_os("FNRS_TEST_PY_VENV").unwrap_or_else(|| {
        panic!(
            "FNRS_TEST_PY_VENV is not set: point it at a venv built from /usr/bin/python3 \
             with `pip install fdk` (python3 -m venv DIR && DIR/bin/pip install fdk)"
        )
    });
    let v = std::fs::canonicalize(PathBuf::from(v)).expect("FNRS_TEST_PY_VENV exists");
    assert!(
        v.join("bin/fdk").is_file(),
        "{}/bin/fdk missing: pip install fdk into the venv",
        v.display()
    );
    v
}

#[tokio::test]
async fn python_fdk_listens_inside_the_sandbox() {
    let venv = venv();
    let (_g, driver) = driver(ProcessDriverConfig {
        ro_paths: vec![venv.clone()],
        ..config("python_fdk_listens_inside_the_sandbox")
    });
    assert!(driver.sandboxed());
    serve_one_call(&driver, &venv).await;
}

/// Unsandboxed, the FDK is told the host path of the iofs directory.
#[tokio::test]
async fn python_fdk_listens_unsandboxed() {
    let venv = venv();
    let (_g, driver) = driver(ProcessDriverConfig {
        sandbox: SandboxMode::None,
        ..config("python_fdk_listens_unsandboxed")
    });
    assert!(!driver.sandboxed());
    serve_one_call(&driver, &venv).await;
}

async fn serve_one_call(driver: &ProcessDriver, venv: &std::path::Path) {
    let f = open_tempdir(0o755);
    std::fs::write(f.path().join("func.py"), FUNC_PY).unwrap();
    std::fs::write(
        f.path().join("func.yaml"),
        format!(
            "schema_version: 20180708\nname: pyfn\nversion: 0.0.1\nruntime: python\n\
             entrypoint: {}/bin/fdk /function/func.py handler\nmemory: 128\n",
            venv.display()
        ),
    )
    .unwrap();
    let iofs = open_tempdir(0o777);
    let mut spec = spec(f.path(), 128);
    spec.iofs_dir = Some(iofs.path().to_path_buf());
    let listener = format!("unix:{}/lsnr.sock", driver.iofs_mount(iofs.path()));
    if driver.sandboxed() {
        assert_eq!(listener, format!("unix:{IOFS_MOUNT}/lsnr.sock"));
    } else {
        assert_eq!(
            listener,
            format!("unix:{}/lsnr.sock", iofs.path().display())
        );
    }
    spec.env = vec![
        ("FN_FORMAT".into(), "http-stream".into()),
        ("FN_LISTENER".into(), listener),
        ("FN_APP_ID".into(), "01APPID".into()),
        ("FN_FN_ID".into(), "01FNID".into()),
        ("FN_MEMORY".into(), "128".into()),
        ("FN_TYPE".into(), "sync".into()),
    ];
    let mut inst = driver.start(spec).await.expect("start");
    let mut io = inst.take_io().unwrap();
    let sock = iofs.path().join("lsnr.sock");
    // Bounded wait for the FDK's readiness symlink (or its early exit).
    let appeared = async {
        for _ in 0..600 {
            if std::fs::symlink_metadata(&sock).is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let ready = tokio::select! {
        r = appeared => r,
        _ = inst.wait() => std::fs::symlink_metadata(&sock).is_ok(),
    };
    if !ready {
        inst.destroy().await;
        let mut err = String::new();
        let _ = io.stderr.read_to_string(&mut err).await;
        panic!("lsnr.sock never appeared; FDK stderr:\n{err}");
    }
    let target = std::fs::read_link(&sock).unwrap();
    assert_eq!(target, PathBuf::from("phonylsnr.sock"));
    let phony = iofs.path().join("phonylsnr.sock");
    assert_eq!(std::fs::metadata(&phony).unwrap().uid(), 65534);

    // The root server side connects and calls the function.
    let body = br#"{"name":"Rust"}"#;
    let mut conn = tokio::net::UnixStream::connect(&sock)
        .await
        .expect("connect");
    let req = format!(
        "POST /call HTTP/1.1\r\nHost: localhost\r\nFn-Call-Id: 01CALLID\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            resp.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&resp).contains("Hello Rust\"}") {
                break;
            }
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("answer in time");
    let resp = String::from_utf8_lossy(&resp).to_string();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#"{"message": "Hello Rust"}"#), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("fn-fdk-version: fdk-python/"),
        "{resp}"
    );

    inst.destroy().await;
    let mut out = String::new();
    tokio::time::timeout(BOUND, io.stdout.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.contains("log line from func"), "stdout: {out}");
}
