//! Hostile files: what a fn author or a function plants where the server
//! looks (func.yaml, lsnr.sock, the iofs area) must fail cleanly, quickly,
//! and leave the server responsive and the host untouched.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{FnDir, Srv};

/// A bound for requests that must not hang (not a timing assertion).
const HANG: Duration = Duration::from_secs(30);

/// A function directory whose `func.yaml` is set up by `plant`.
fn fn_dir_with(plant: impl FnOnce(&Path)) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("fnrs-fn-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    plant(&d.path().join("func.yaml"));
    d
}

async fn create(s: &Srv, name: &str, dir: &Path) -> (u16, serde_json::Value) {
    let body = json!({"app_id": s.app_id, "name": name,
        "image": format!("file://{}", dir.display())});
    tokio::time::timeout(HANG, s.json("POST", "/v2/fns", Some(body)))
        .await
        .unwrap_or_else(|_| panic!("POST /v2/fns for {name} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_func_yaml_gets_a_clean_400_and_the_server_stays_up() {
    let s = Arc::new(Srv::start().await);
    let fifo = fn_dir_with(|p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
    });
    let zero = fn_dir_with(|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap());
    let vault = tempfile::tempdir().unwrap();
    std::fs::set_permissions(vault.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = vault.path().join("secret.txt");
    std::fs::write(&secret, "TOPSECRET first line\nTOPSECRET: 2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let linked = fn_dir_with(|p| std::os::unix::fs::symlink(&secret, p).unwrap());
    let big = fn_dir_with(|p| {
        let f = std::fs::File::create(p).unwrap();
        f.set_len(2 << 20).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    });
    let bad_yaml = fn_dir_with(|p| {
        std::fs::write(p, "entrypoint: ./x\nmemory: TOPSECRET\n").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    });

    // Two creates on the FIFO at once (that froze the server), /health meanwhile.
    let mut fifo_calls = Vec::new();
    for i in 0..2 {
        let s = Arc::clone(&s);
        let dir = fifo.path().to_path_buf();
        fifo_calls.push(tokio::spawn(async move {
            create(&s, &format!("fifo{i}"), &dir).await
        }));
    }
    let (st, h) = tokio::time::timeout(HANG, s.json("GET", "/health", None))
        .await
        .expect("/health answers while func.yaml FIFOs are looked at");
    assert_eq!(st, 200, "{h}");
    for c in fifo_calls {
        let (st, v) = c.await.unwrap();
        assert_eq!(st, 400, "{v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("not a regular file"), "{m}");
    }

    for (name, dir, want) in [
        ("zero", zero.path(), "symbolic link"),
        ("linked", linked.path(), "symbolic link"),
        ("big", big.path(), "larger than"),
        ("badyaml", bad_yaml.path(), "line 2"),
    ] {
        let (st, v) = create(&s, name, dir).await;
        assert_eq!(st, 400, "{name}: {v}");
        let m = v["message"].as_str().expect("Fn's error shape");
        assert!(m.contains(want), "{name}: {m}");
        assert!(!m.contains("TOPSECRET"), "{name}: content echoed: {m}");
    }
    // Still serving, and its memory did not explode on /dev/zero.
    let (st, _) = s.json("GET", "/v2/apps", None).await;
    assert_eq!(st, 200);
    let pid = s.server.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kb < 512 * 1024, "server RSS {rss_kb} kB");
    let s = Arc::into_inner(s).unwrap();
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[]).await;
}

/// `lsnr.sock` planted as a link to a socket outside the iofs directory:
/// the server never connects there, the call fails cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_lsnr_sock_link_is_never_followed() {
    let s = Srv::start().await;
    let bait_dir = tempfile::tempdir().unwrap();
    let bait = bait_dir.path().join("bait.sock");
    let listener = std::os::unix::net::UnixListener::bind(&bait).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::fs::set_permissions(&bait, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Made under another name and renamed into place, so that the log
    // proves the link was made: without `lsnr.sock` the start times out (504).
    let script = format!(
        "#!/bin/sh\nln -s {} /tmp/iofs/tmp.sock || exit 3\necho planted >&2\n\
         sleep 0.5\nmv /tmp/iofs/tmp.sock /tmp/iofs/lsnr.sock || exit 4\nexec sleep 30\n",
        bait.display()
    );
    let d = FnDir::new("./run.sh", "http-stream", &[("run.sh", &script)]);
    let f = s.func("linker", &d.image(), json!({})).await;
    let a = tokio::time::timeout(HANG, s.invoke(&f, "x"))
        .await
        .expect("invoke answers");
    assert_eq!(a.status, 502, "{a:?}");
    assert!(a.json()["message"].is_string(), "{a:?}");
    s.log_with(&f, &a.call_id(), "planted").await;
    assert!(
        listener.accept().is_err(),
        "the server connected to the planted link's target"
    );
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
}
