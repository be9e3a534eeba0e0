//! Each setting of the process driver (and Fn's ulimits) observed where it
//! takes effect: from inside the function, in `/health`, or in the cgroup
//! tree; bad values stop the server at start, naming the variable; and
//! `fnrs serve --help` and the README name every variable the code reads.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{BIN, FnDir, Srv};

/// Prints what the sandbox gives the function, one `key=value` a line.
const PROBE: &str = r#"#!/bin/bash
read -r _ || true
echo "nofile=$(ulimit -n)"
echo "memlock=$(ulimit -l)"
echo "sigpending=$(ulimit -i)"
echo "msgqueue=$(ulimit -q)"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "seccomp=$(awk '/^Seccomp:/ { print $2 }' /proc/self/status)"
echo "tmp_kb=$(df -k /tmp | awk 'NR == 2 { print $2 }')"
echo "pwd=$(pwd)"
/usr/bin/python3 -c '
import os, time
kids = []
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print("forked=%d" % len(kids))
for k in kids:
    os.kill(k, 9)
for k in kids:
    os.waitpid(k, 0)
'
"#;

fn probe_fn() -> FnDir {
    FnDir::new("./probe.sh", "default", &[("probe.sh", PROBE)])
}

/// Deploy the probe, call it once, and parse its `key=value` lines.
async fn probe(s: &Srv) -> BTreeMap<String, String> {
    let d = probe_fn();
    let f = s
        .func("probe", &d.image(), json!({"format": "default"}))
        .await;
    let a = s.invoke(&f, "go\n").await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn process_health(h: &Value) -> &Value {
    &h["invoker"]["drivers"]["process"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fn_ulimits_reach_the_function() {
    // Direct starts and pooled (prebuilt) sandboxes.
    for pool in ["0", "2"] {
        let s = Srv::start_with(&[
            ("FN_PROCESS_POOL_SIZE", pool),
            ("FN_MAX_OPEN_FILES", "321"),
            ("FN_MAX_LOCKED_MEMORY", "131072"),
            ("FN_MAX_PENDING_SIGNALS", "77"),
            ("FN_MAX_MESSAGE_QUEUE", "40960"),
        ])
        .await;
        let p = probe(&s).await;
        assert_eq!(p["nofile"], "321", "pool {pool}: {p:?}");
        // bash shows memlock in KiB.
        assert_eq!(p["memlock"], "128", "pool {pool}: {p:?}");
        assert_eq!(p["sigpending"], "77", "pool {pool}: {p:?}");
        assert_eq!(p["msgqueue"], "40960", "pool {pool}: {p:?}");
    }
    // Fn's defaults.
    let s = Srv::start().await;
    let p = probe(&s).await;
    assert_eq!(
        (
            &*p["nofile"],
            &*p["memlock"],
            &*p["sigpending"],
            &*p["msgqueue"]
        ),
        ("350", "64", "5000", "819200"),
        "{p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ulimit_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nofile");
    std::fs::write(&file, "123\n").unwrap();
    let s = Srv::start_with(&[("FN_MAX_OPEN_FILES_FILE", &file.display().to_string())]).await;
    let p = probe(&s).await;
    assert_eq!(p["nofile"], "123", "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_size_is_the_setting() {
    let s = Srv::start_with(&[("FN_PROCESS_POOL_SIZE", "0")]).await;
    let h = s.health().await;
    assert!(process_health(&h)["pool"].is_null(), "{h}");
    let s = Srv::start_with(&[("FN_PROCESS_POOL_SIZE", "2")]).await;
    let h = s.health().await;
    assert_eq!(process_health(&h)["pool"]["size"], 2, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pids_limit_bounds_the_function() {
    let s = Srv::start_with(&[("FN_MAX_PIDS", "10")]).await;
    let p = probe(&s).await;
    let forked: u32 = p["forked"].parse().unwrap();
    // bash, python and the sandbox's own processes count too.
    assert!((1..10).contains(&forked), "{p:?}");
    let s = Srv::start().await;
    let p = probe(&s).await;
    assert_eq!(p["forked"], "40", "the default (50) allows 40 more: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_runs_as_the_configured_uid_and_gid() {
    let s = Srv::start_with(&[("FN_PROCESS_UID", "1234"), ("FN_PROCESS_GID", "2345")]).await;
    let p = probe(&s).await;
    assert_eq!((&*p["uid"], &*p["gid"]), ("1234", "2345"), "{p:?}");
    let s = Srv::start().await;
    let p = probe(&s).await;
    assert_eq!((&*p["uid"], &*p["gid"]), ("65534", "65534"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tmp_size_is_the_setting() {
    for pool in ["0", "2"] {
        let s = Srv::start_with(&[
            ("FN_PROCESS_POOL_SIZE", pool),
            ("FN_PROCESS_TMP_SIZE_MB", "3"),
        ])
        .await;
        let p = probe(&s).await;
        assert_eq!(p["tmp_kb"], "3072", "pool {pool}: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_can_be_turned_off() {
    let s = Srv::start_with(&[("FN_PROCESS_SECCOMP", "false")]).await;
    let h = s.health().await;
    assert_eq!(process_health(&h)["seccomp"], false, "{h}");
    let p = probe(&s).await;
    assert_eq!(p["seccomp"], "0", "{p:?}");
    let s = Srv::start().await;
    let p = probe(&s).await;
    assert_eq!(p["seccomp"], "2", "filter mode by default: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bwrap_path_is_the_setting() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bwrap = dir.path().join("my-bwrap");
    std::fs::copy("/usr/bin/bwrap", &bwrap).unwrap();
    std::fs::set_permissions(&bwrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Srv::start_with(&[("FN_PROCESS_BWRAP", &bwrap.display().to_string())]).await;
    let h = s.health().await;
    assert_eq!(
        process_health(&h)["bwrap"],
        bwrap.display().to_string(),
        "{h}"
    );
    let p = probe(&s).await;
    assert_eq!(p["pwd"], "/function", "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sandbox_the_function_runs_in_its_host_directory() {
    let s = Srv::start_with(&[("FN_PROCESS_SANDBOX", "none")]).await;
    let h = s.health().await;
    assert_eq!(process_health(&h)["unsandboxed"], true, "{h}");
    let d = probe_fn();
    let f = s
        .func("probe", &d.image(), json!({"format": "default"}))
        .await;
    let a = s.invoke(&f, "go\n").await;
    assert_eq!(a.status, 200, "{a:?}");
    let pwd = d.dir.path().canonicalize().unwrap();
    assert!(
        a.body.contains(&format!("pwd={}\n", pwd.display())),
        "{a:?}"
    );
}

/// The instance cgroup directories of a server under `root` (v1 and v2).
pub fn server_cgroups(root: &str, server_id: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let base = Path::new("/sys/fs/cgroup");
    let mut bases = vec![base.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(base) {
        bases.extend(rd.flatten().map(|e| e.path()));
    }
    for b in bases {
        let p = b.join(root).join(server_id);
        if p.is_dir() {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cgroup_parent_is_the_setting() {
    let root = format!("fnrs-settings-{}", std::process::id());
    let s = Srv::start_with(&[("FN_PROCESS_CGROUP_PARENT", &root)]).await;
    let id = s.server_id().await;
    // The pool's waiting sandboxes have their cgroups there.
    let mut found = Vec::new();
    for _ in 0..100 {
        found = server_cgroups(&root, &id);
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!found.is_empty(), "no cgroup under {root}/{id}");
    assert!(server_cgroups("fnrs", &id).is_empty());
    let p = probe(&s).await;
    assert_eq!(p["pwd"], "/function", "{p:?}");
    s.stop_and_check_clean(&id, &[]).await;
    assert!(server_cgroups(&root, &id).is_empty());
    for b in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(b.path().join(&root));
    }
}

/// Runs `fnrs serve` with `env` and expects it to exit with an error at
/// start (bounded wait); returns its stderr.
fn refused_at_start(env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(data.path())
        .env("FN_PORT", "0")
        .env(
            "FN_DB_URL",
            format!("sqlite3://{}", data.path().join("fn.db").display()),
        )
        .env("FN_IOFS_PATH", data.path().join("iofs"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut exited = None;
    for _ in 0..300 {
        if let Ok(Some(st)) = child.try_wait() {
            exited = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let err = reader.join().unwrap();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "{env:?}: the server did not refuse to start: {exited:?}\n{err}"
    );
    err
}

#[test]
fn bad_values_stop_the_server_naming_the_variable() {
    for (k, v) in [
        ("FN_PROCESS_SANDBOX", "docker"),
        ("FN_PROCESS_NETWORK", "bridge"),
        ("FN_PROCESS_POOL_SIZE", "-1"),
        ("FN_PROCESS_UID", "nobody"),
        ("FN_PROCESS_GID", "-5"),
        ("FN_PROCESS_TMP_SIZE_MB", "1G"),
        ("FN_PROCESS_SECCOMP", "maybe"),
        ("FN_PROCESS_CGROUP_PARENT", "../escape"),
        ("FN_PROCESS_ROOTS", "relative/dir"),
        ("FN_PROCESS_RO_PATHS", "relative/dir"),
        ("FN_PROCESS_BWRAP", "relative/bwrap"),
        ("FN_PROCESS_PASTA", "relative/pasta"),
        ("FN_MAX_PIDS", "lots"),
        ("FN_MAX_OPEN_FILES", "lots"),
        ("FN_MAX_LOCKED_MEMORY", "1.5"),
        ("FN_MAX_PENDING_SIGNALS", "x"),
        ("FN_MAX_MESSAGE_QUEUE", "y"),
        ("FN_HOT_START_TIMEOUT_MSECS", "5s"),
        ("FN_MAX_QUEUE_WAIT_MSECS", "-1"),
        ("FN_HOT_POLL_MSECS", "soon"),
        ("FN_MAX_TOTAL_MEMORY_BYTES", "1GiB"),
        ("FN_MAX_RESPONSE_SIZE", "big"),
        ("FN_MAX_HDR_RESPONSE_SIZE", "1e6"),
        ("FN_MAX_LOG_SIZE_BYTES", "1M"),
        ("FN_DETACHED_MAX_AGE_SECS", "1h"),
        ("FN_RECORDER_BACKLOG_BYTES", "64MiB"),
        ("FN_MAX_CALLS_PER_FN", "all"),
    ] {
        let err = refused_at_start(&[(k, v)]);
        assert!(err.contains(k), "{k}={v}: the error names no {k}:\n{err}");
    }
}

/// The `FN_*` (and `DOCKER_HOST`) names of every `ENV_*` constant in the
/// server's sources.
fn variables_read() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in [
        "crates/fnrs-cli/src/serve.rs",
        "crates/fnrs-cli/src/agent.rs",
        "crates/fnrs-agent/src",
        "crates/fnrs-driver-process/src",
        "crates/fnrs-driver-docker/src",
    ] {
        let p = root.join(dir);
        if p.is_file() {
            files.push(p);
        } else if let Ok(rd) = std::fs::read_dir(&p) {
            files.extend(
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|f| f.extension().is_some_and(|x| x == "rs")),
            );
        }
    }
    let mut vars = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            let Some(rest) = line
                .strip_prefix("pub const ENV_")
                .or_else(|| line.strip_prefix("pub(crate) const ENV_"))
                .or_else(|| line.strip_prefix("const ENV_"))
            else {
                continue;
            };
            if let Some((_, value)) = rest.split_once("= \"")
                && let Some(name) = value.strip_suffix("\";")
            {
                vars.push(name.to_string());
            }
        }
    }
    vars.sort();
    vars.dedup();
    vars
}

#[test]
fn help_and_readme_name_every_variable_the_server_reads() {
    let vars = variables_read();
    // The scan finds the constants (a check of the scan itself).
    for known in [
        "FN_PORT",
        "FN_MAX_OPEN_FILES",
        "FN_PROCESS_BWRAP",
        "DOCKER_HOST",
    ] {
        assert!(
            vars.iter().any(|v| v == known),
            "{known} not found: {vars:?}"
        );
    }
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    // A whole word: FN_MAX_PIDS must not pass for FN_MAX_PIDSX.
    let names = |text: &str, v: &str| {
        text.match_indices(v).any(|(i, _)| {
            let after = text[i + v.len()..].chars().next();
            let before = text[..i].chars().next_back();
            !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let missing_help: Vec<&String> = vars.iter().filter(|v| !names(&help, v)).collect();
    let missing_readme: Vec<&String> = vars.iter().filter(|v| !names(&readme, v)).collect();
    assert!(
        missing_help.is_empty(),
        "not in `fnrs serve --help`: {missing_help:?}"
    );
    assert!(
        missing_readme.is_empty(),
        "not in README.md: {missing_readme:?}"
    );
}
