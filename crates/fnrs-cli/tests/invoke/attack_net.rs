//! A hostile function against the network: by default a sandboxed function
//! has its own network namespace (outbound through pasta) in which the
//! host's loopback, and so the server's API, is not reachable. `shared` is
//! an explicit, warned-about opt-in; without pasta the function gets no
//! network, never the host's. pasta lives exactly as long as its sandbox.
//! Only loopback is ever probed.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{FnDir, Srv};

/// Prints the namespace's routes and tries the API port on both loopbacks.
const PROBE: &str = r#"#!/bin/bash
read -r _ || true
awk 'NR > 1 { print "route", $1, $2 }' /proc/net/route
for h in 127.0.0.1 ::1; do
  if (exec 3<>"/dev/tcp/$h/$API_PORT") 2>/dev/null; then echo "REACHED $h"; else echo "refused $h"; fi
done
"#;

fn probe_fn() -> FnDir {
    FnDir::new("./probe.sh", "default", &[("probe.sh", PROBE)])
}

/// Deploy the probe with the server's port in its config and call it.
async fn probe(s: &Srv) -> String {
    let d = probe_fn();
    let port = s.server.addr().port().to_string();
    let f = s
        .func(
            "probe",
            &d.image(),
            json!({"format": "default", "config": {"API_PORT": port}}),
        )
        .await;
    let a = s.invoke(&f, "go\n").await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
}

fn process_health(h: &Value) -> &Value {
    &h["invoker"]["drivers"]["process"]
}

fn has_default_route(out: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with("route ") && l.ends_with(" 00000000") && !l.contains(" lo "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_cannot_reach_the_api_over_loopback() {
    // Direct starts and prebuilt (pooled) sandboxes.
    for pool in ["0", "4"] {
        let s = Srv::start_with(&[("FN_PROCESS_POOL_SIZE", pool)]).await;
        let h = s.health().await;
        assert_eq!(process_health(&h)["network"], "private", "{h}");
        let out = probe(&s).await;
        assert!(out.contains("refused 127.0.0.1"), "pool {pool}: {out}");
        assert!(out.contains("refused ::1"), "pool {pool}: {out}");
        assert!(!out.contains("REACHED"), "pool {pool}: {out}");
        // Yet the function has a network of its own to go out through.
        assert!(
            has_default_route(&out),
            "pool {pool}: no default route: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_network_is_an_explicit_opt_in_with_a_warning() {
    let s = Srv::start_with(&[("FN_PROCESS_NETWORK", "shared")]).await;
    let h = s.health().await;
    let p = process_health(&h);
    assert_eq!(p["network"], "shared", "{h}");
    let warned = p["warnings"].as_array().is_some_and(|w| {
        w.iter().any(|w| {
            w.as_str()
                .is_some_and(|w| w.contains("FN_PROCESS_NETWORK=shared"))
        })
    });
    assert!(warned, "{h}");
    // What it means: the probe does reach the server.
    let out = probe(&s).await;
    assert!(out.contains("REACHED 127.0.0.1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pasta_a_function_gets_no_network_not_the_hosts() {
    let s = Srv::start_with(&[("FN_PROCESS_PASTA", "/nonexistent/pasta")]).await;
    let h = s.health().await;
    let p = process_health(&h);
    assert_eq!(p["network"], "none", "{h}");
    let warned = p["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("/nonexistent/pasta")))
    });
    assert!(warned, "{h}");
    let out = probe(&s).await;
    assert!(!out.contains("REACHED"), "{out}");
    assert!(!has_default_route(&out), "{out}");
}

/// Processes whose command line starts with `prog`.
fn running(prog: &Path) -> usize {
    let prog = prog.to_string_lossy().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(prog.as_bytes()))
        })
        .count()
}

/// Poll until `f` holds (bounded); returns whether it did.
async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasta_lives_and_dies_with_its_sandboxes() {
    // A name of its own for this server's pastas.
    let bin = tempfile::tempdir().unwrap();
    let pasta = bin.path().join("pasta");
    std::os::unix::fs::symlink("/usr/bin/pasta", &pasta).unwrap();
    let mut s = Srv::start_with(&[
        ("FN_PROCESS_PASTA", &pasta.display().to_string()),
        ("FN_PROCESS_POOL_SIZE", "2"),
    ])
    .await;
    let idle = async |s: &Srv| {
        let h = s.health().await;
        process_health(&h)["pool"]["idle"].as_u64().unwrap_or(0) as usize
    };
    // One per waiting sandbox.
    assert!(eventually(async || idle(&s).await == 2 && running(&pasta) == 2).await);
    let d = probe_fn();
    let port = s.server.addr().port().to_string();
    let f = s
        .func(
            "short",
            &d.image(),
            json!({"format": "default", "idle_timeout": 1, "config": {"API_PORT": port}}),
        )
        .await;
    assert_eq!(s.invoke(&f, "go\n").await.status, 200);
    // The instance's goes with it once it ends, the pool's stay.
    assert!(
        eventually(async || s.instances().await == 0 && running(&pasta) == idle(&s).await).await,
        "{} pastas, {} idle",
        running(&pasta),
        idle(&s).await
    );
    // And every one dies with the server, even on SIGKILL.
    s.server.kill9();
    assert!(
        eventually(async || running(&pasta) == 0).await,
        "{} pastas outlive the server",
        running(&pasta)
    );
}

/// A listener on the host's 127.0.0.1 that greets whoever connects.
fn greeter() -> (u16, &'static str) {
    const BANNER: &str = "FNRS-HOST-LOOPBACK";
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for c in l.incoming().take(16).flatten() {
            let _ = (&c).write_all(BANNER.as_bytes());
        }
    });
    (port, BANNER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_cannot_reach_a_loopback_bound_server() {
    let Ok(img) = std::env::var("FNRS_TEST_DOCKER_IMAGE_SHELL") else {
        panic!("FNRS_TEST_DOCKER_IMAGE_SHELL: run scripts/docker-setup.sh and source its env.sh");
    };
    let (port, banner) = greeter();
    let s = Srv::start().await;
    let f = s
        .func(
            "probe",
            &img,
            json!({"format": "default", "config": {"FNRS_TEST_MODE": "probe", "PROBE_PORT": port.to_string()}}),
        )
        .await;
    let a = s.invoke(&f, "").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("probed"), "{a:?}");
    assert!(
        !a.body.contains(banner),
        "the container reached the host's loopback: {a:?}"
    );
}
