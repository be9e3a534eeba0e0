//! Helpers for the process driver's tests (real bwrap, real cgroups; run as
//! root).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fnrs_driver::{ExitInfo, Instance, InstanceSpec};
use fnrs_driver_process::{ProcessDriver, ProcessDriverConfig, SandboxMode};
use tokio::io::AsyncReadExt;

/// A bound for every wait in these tests (never asserted as a timing).
pub const BOUND: Duration = Duration::from_secs(60);

/// The base config of a test named `name`: bwrap required, and a parent
/// cgroup of its own (not the server's `fnrs`), removed by the guard.
pub fn config(name: &str) -> ProcessDriverConfig {
    ProcessDriverConfig {
        sandbox: SandboxMode::Bwrap,
        cgroup_parent: format!("fnrs-test-pd-{name}"),
        ..Default::default()
    }
}

/// The guard that removes its parent cgroups at the end and the driver
/// (declared in this order, the driver is dropped first: its launcher pool's
/// cgroups are gone when the guard removes the parents).
pub fn driver(config: ProcessDriverConfig) -> (ParentGuard, ProcessDriver) {
    let d = ProcessDriver::new(config).expect("driver");
    let g = ParentGuard(d.cgroup_parents());
    (g, d)
}

/// Removes the test's parent cgroups when dropped (they are empty once
/// every instance has ended).
pub struct ParentGuard(pub Vec<PathBuf>);

impl Drop for ParentGuard {
    fn drop(&mut self) {
        // An instance dropped at the end of a test is cleaned up in the
        // background: give it a moment (bounded).
        for _ in 0..200 {
            for p in &self.0 {
                let _ = std::fs::remove_dir(p);
            }
            if self.0.iter().all(|p| !p.exists()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A temp directory readable by the sandbox user.
pub fn open_tempdir(mode: u32) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("fnrs-pd-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

/// A function directory holding `run.sh` (the script) and a func.yaml
/// whose entrypoint runs it.
pub fn script_fn(script: &str) -> tempfile::TempDir {
    let d = open_tempdir(0o755);
    let run = d.path().join("run.sh");
    std::fs::write(&run, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.path().join("func.yaml"),
        "schema_version: 20180708\nname: t\nversion: 0.0.1\nentrypoint: ./run.sh\n",
    )
    .unwrap();
    d
}

pub fn image(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh instance id (26 alphanumerics, like Fn's).
pub fn new_id() -> String {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let s = format!("T{:08}{:05}{}", std::process::id(), n, nanos);
    s[..26].to_string()
}

pub fn spec(dir: &Path, memory_mb: u64) -> InstanceSpec {
    InstanceSpec {
        id: new_id(),
        app_id: "01APP".into(),
        fn_id: "01FN".into(),
        image: image(dir),
        env: vec![("FOO".into(), "bar baz".into())],
        memory_mb,
        iofs_dir: None,
        stdin: false,
        syslog_url: None,
    }
}

/// Read stdout and stderr to the end and wait for the exit.
pub async fn run_to_end(inst: &mut Box<dyn Instance>) -> (String, String, ExitInfo) {
    let mut io = inst.take_io().expect("io");
    let fut = async {
        let mut out = String::new();
        let mut err = String::new();
        let (a, b) = tokio::join!(
            io.stdout.read_to_string(&mut out),
            io.stderr.read_to_string(&mut err)
        );
        a.unwrap();
        b.unwrap();
        let exit = inst.wait().await;
        (out, err, exit)
    };
    tokio::time::timeout(BOUND, fut)
        .await
        .expect("instance ended in time")
}

pub fn exists(p: &PathBuf) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Whether a pid is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// Live (non-zombie) processes whose raw `/proc/<pid>/cmdline` is exactly
/// `cmdline` (arguments NUL-terminated).
pub fn processes_running(cmdline: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && c == cmdline.as_bytes()
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// Where a crashing "server" helper test takes its cgroup parent's name.
pub const HELPER_ENV: &str = "FNRS_PD_HELPER_PARENT";

/// Runs the `#[ignore]`d test `helper` of this test binary as a server (its
/// cgroup parent in [`HELPER_ENV`]) that prints the pids it started
/// (`PIDS a,b,…`) and then its fn dir (`FNDIR path`) and waits. The server
/// is SIGKILLed; every one of those pids must have been alive before and be
/// gone after (bounded poll). Returns the pids and the fn dir.
pub fn crash_helper_server(helper: &str, parent: &str) -> (Vec<i32>, Option<PathBuf>) {
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", helper, "--nocapture"])
        .env(HELPER_ENV, parent)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let mut pids: Vec<i32> = Vec::new();
    let mut fn_dir = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).take(50) {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("PIDS ") {
            pids = p.split(',').map(|p| p.parse().unwrap()).collect();
        }
        if let Some(d) = line.strip_prefix("FNDIR ") {
            fn_dir = Some(PathBuf::from(d));
            break;
        }
    }
    let all_alive = pids.iter().all(|p| alive(*p));
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(!pids.is_empty(), "no pids from {helper}");
    assert!(all_alive, "{pids:?}");
    for _ in 0..500 {
        if pids.iter().all(|p| !alive(*p)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in &pids {
        assert!(!alive(*p), "pid {p} outlived the server");
    }
    (pids, fn_dir)
}

/// The cgroups left under the driver's cgroup parents.
pub fn cgroups_left(driver: &ProcessDriver) -> Vec<PathBuf> {
    driver
        .cgroup_parents()
        .iter()
        .flat_map(|p| std::fs::read_dir(p).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}
