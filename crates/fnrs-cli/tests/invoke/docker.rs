//! The same calls on the Docker driver: Fn's function images on a real
//! engine through `fnrs serve` (needs `scripts/docker-setup.sh`, whose
//! `env.sh` names the locally built test images).

use serde_json::json;

use crate::common::Srv;

fn image(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} must name a local test image: run scripts/docker-setup.sh and source its env.sh"
        )
    })
}

/// Containers of one server, by its label.
fn containers_of(server_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=fnrs.server={server_id}"),
        ])
        .output()
        .expect("docker CLI runs");
    assert!(out.status.success(), "docker ps: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_fdk_image_hot_through_invoke_and_trigger() {
    let s = Srv::start().await;
    let f = s
        .func(
            "rust-docker",
            &image("FNRS_TEST_DOCKER_IMAGE_RUST"),
            json!({}),
        )
        .await;
    s.trigger(&f, "hello", "/docker").await;
    let a = s.invoke(&f, r#"{"name":"Container"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["message"], "Hello Container");
    assert_eq!(a.json()["call_id"], a.call_id().as_str());
    let a = s
        .send(
            s.http
                .post(s.url("/t/e2e/docker"))
                .header("content-type", "application/json")
                .body(r#"{"name":"Gw"}"#),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["message"], "Hello Gw");
    assert_eq!(
        s.instances().await,
        1,
        "one hot container served both calls"
    );
    let id = s.server_id().await;
    assert_eq!(containers_of(&id).len(), 1);
    let status = {
        let mut s = s;
        let st = s.server.stop();
        drop(s);
        st
    };
    assert!(status.is_some_and(|s| s.success()));
    assert!(
        containers_of(&id).is_empty(),
        "SIGTERM removes the server's containers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_format_in_a_container_with_crash_and_oom() {
    let s = Srv::start().await;
    let img = image("FNRS_TEST_DOCKER_IMAGE_SHELL");
    let echo = s.func("echo", &img, json!({"format": "default"})).await;
    let a = s.invoke(&echo, "hello").await;
    assert_eq!((a.status, a.body.as_str()), (200, "got:hello"), "{a:?}");
    let log = s.log_with(&echo, &a.call_id(), "fn.sh started").await;
    assert!(log.contains("fn.sh started"));

    let crash = s
        .func(
            "crash",
            &img,
            json!({"format": "default", "config": {"FNRS_TEST_MODE": "crash"}}),
        )
        .await;
    let a = s.invoke(&crash, "x").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.json()["message"], "container exit code 3");

    let oom = s
        .func(
            "oom",
            &img,
            json!({"format": "default", "memory": 32, "config": {"FNRS_TEST_MODE": "oom"}}),
        )
        .await;
    let a = s.invoke(&oom, "x").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert!(
        a.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("out of memory")),
        "{a:?}"
    );
    let id = s.server_id().await;
    assert!(
        containers_of(&id).is_empty(),
        "cold containers are removed after each call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_engine_answers_503_and_health_says_why() {
    let s = Srv::start_with(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]).await;
    let f = s.func("nodocker", "fnrs-test/none:latest", json!({})).await;
    let a = s.invoke(&f, "x").await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(
        a.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/docker.sock")),
        "{a:?}"
    );
    assert_eq!(a.header("retry-after"), Some("15"));
    let h = s.health().await;
    assert_eq!(h["invoker"]["drivers"]["docker"]["ok"], false, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_syslog_url_receives_the_container_output() {
    let s = Srv::start().await;
    let syslog = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = syslog.local_addr().unwrap().port();
    let (st, app) = s
        .json(
            "POST",
            "/v2/apps",
            Some(json!({"name": "logged", "syslog_url": format!("udp://127.0.0.1:{port}")})),
        )
        .await;
    assert_eq!(st, 200, "{app}");
    let (st, f) = s
        .json(
            "POST",
            "/v2/fns",
            Some(json!({
                "app_id": app["id"], "name": "echo", "format": "default",
                "image": image("FNRS_TEST_DOCKER_IMAGE_SHELL"),
            })),
        )
        .await;
    assert_eq!(st, 200, "{f}");
    let fn_id = f["id"].as_str().unwrap();
    let a = s.invoke(fn_id, "to syslog").await;
    assert_eq!((a.status, a.body.as_str()), (200, "got:to syslog"), "{a:?}");
    // The engine's syslog driver sends the container's stderr line (RFC 5424,
    // facility user, tagged with the app and fn ids).
    let mut buf = vec![0u8; 8192];
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !got.contains("fn.sh started") {
        let n = tokio::time::timeout_at(deadline, syslog.recv(&mut buf))
            .await
            .expect("a syslog message within 10 s")
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains(&format!("fn_id={fn_id}")), "{got}");
    // The call log is kept as well.
    let log = s.log_with(fn_id, &a.call_id(), "fn.sh started").await;
    assert!(log.contains("fn.sh started"));

    // A syslog the engine cannot reach answers Fn's 500.
    let (st, bad) = s
        .json(
            "POST",
            "/v2/apps",
            Some(json!({"name": "unlogged", "syslog_url": "tcp://127.0.0.1:1"})),
        )
        .await;
    assert_eq!(st, 200, "{bad}");
    let (st, f) = s
        .json(
            "POST",
            "/v2/fns",
            Some(json!({
                "app_id": bad["id"], "name": "echo", "format": "default",
                "image": image("FNRS_TEST_DOCKER_IMAGE_SHELL"),
            })),
        )
        .await;
    assert_eq!(st, 200, "{f}");
    let a = s.invoke(f["id"].as_str().unwrap(), "x").await;
    assert_eq!(a.status, 500, "{a:?}");
    assert_eq!(a.json()["message"], "Syslog Unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_containers_go_at_the_next_start_lock_file_or_not() {
    // A server killed while its lock file was being removed leaves neither a
    // running server nor a lock: its containers are still leftovers.
    let mut s = Srv::start().await;
    let img = image("FNRS_TEST_DOCKER_IMAGE_RUST");
    let id = s.server_id().await;
    let _cleanup = RemoveContainersOf(id.clone());
    for i in 0..3 {
        let f = s.func(&format!("hot{i}"), &img, json!({})).await;
        let a = s.invoke(&f, r#"{"name":"x"}"#).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(containers_of(&id).len(), 3, "one hot container per fn");
    s.server.kill9();
    let lock = fnrs_agent::default_lock_dir().join(format!("{id}.lock"));
    std::fs::remove_file(&lock).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
    assert_eq!(containers_of(&id).len(), 3, "SIGKILL leaves the containers");
    // The next server cleans up before it answers at all.
    s.server.restart().await.expect("restarts");
    let left = containers_of(&id);
    assert!(
        left.is_empty(),
        "the killed server's containers stay: {left:?}"
    );
    assert_ne!(s.server_id().await, id);
}

/// Removes a server's containers when dropped (also when a test fails).
struct RemoveContainersOf(String);

impl Drop for RemoveContainersOf {
    fn drop(&mut self) {
        let ids = containers_of(&self.0);
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}
