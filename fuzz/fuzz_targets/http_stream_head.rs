//! The http-stream client's handling of whatever a function answers on its
//! socket: response head (via hyper), status rules, gateway unwrap, body
//! limits. A real unix socket in a temp dir answers each input verbatim.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fnrs_protocol::{CallRequest, HttpStreamConn, Limits, full_body};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Env {
    rt: tokio::runtime::Runtime,
    dir: std::path::PathBuf,
    reply: &'static Mutex<Vec<u8>>,
    conn: Mutex<Option<HttpStreamConn>>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // fuzz/run.sh removes these directories afterwards.
        let dir = std::env::temp_dir().join(format!("fnrs-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let reply: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let listener = rt.block_on(async {
            tokio::net::UnixListener::bind(dir.join("phonylsnr.sock")).unwrap()
        });
        std::os::unix::fs::symlink("phonylsnr.sock", dir.join("lsnr.sock")).unwrap();
        rt.spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    // Read the request head, then answer the current input and
                    // hang up.
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let out = reply.lock().unwrap().clone();
                    let _ = s.write_all(&out).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Env {
            rt,
            dir,
            reply,
            conn: Mutex::new(None),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let e = env();
    *e.reply.lock().unwrap() = data.to_vec();
    let mut slot = e.conn.lock().unwrap();
    e.rt.block_on(async {
        if slot.is_none() {
            let limits = Limits {
                max_response_header_bytes: 2048,
                max_response_body_bytes: Some(4096),
            };
            *slot = Some(
                HttpStreamConn::connect(&e.dir, limits)
                    .await
                    .expect("connect"),
            );
        }
        let conn = slot.as_mut().unwrap();
        let req = CallRequest {
            call_id: "01FUZZ".into(),
            deadline: fnrs_model::DateTime::from_millis(0),
            timeout: Duration::from_secs(5),
            method: http::Method::POST,
            url: "http://localhost/t/app/x".into(),
            headers: http::HeaderMap::new(),
            gateway: flags & 1 == 1,
            body: full_body(""),
        };
        match conn.call(req).await {
            Ok(h) => {
                let status = h.response.status();
                assert!(status.as_u16() >= 100);
                let body = h.response.into_body().collect().await;
                if let Ok(b) = body {
                    assert!(b.to_bytes().len() <= 4096);
                }
                let _ = h.done.await;
            }
            Err(err) => {
                assert!(matches!(err.error.status, 502 | 504), "{err:?}");
            }
        }
    });
});
