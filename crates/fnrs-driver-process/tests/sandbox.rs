//! The process driver against real bubblewrap and real cgroups (run as root).

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;
use fnrs_driver::{Driver, DriverError, ExitInfo, IOFS_MOUNT};
use fnrs_driver_process::{NetworkMode, ProcessDriver, ProcessDriverConfig, SandboxMode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn runs_a_script_and_reads_its_streams() {
    let (_g, driver) = driver(config("runs_a_script_and_reads_its_streams"));
    assert!(driver.sandboxed());
    let f = script_fn("echo hello; echo oops >&2; echo \"foo=$FOO\"; exit 3");
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let dirs: Vec<PathBuf> = cgroup_dirs(&driver, inst.id());
    assert!(!dirs.is_empty() && dirs.iter().all(exists), "{dirs:?}");
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(out, "hello\nfoo=bar baz\n");
    assert_eq!(err, "oops\n");
    assert_eq!(
        exit,
        ExitInfo {
            code: 3,
            oom_killed: false
        }
    );
    // The cgroup is gone once the exit is known, and wait() answers again.
    assert!(dirs.iter().all(|d| !exists(d)), "{dirs:?}");
    assert_eq!(inst.wait().await.code, 3);
    inst.destroy().await;
}

fn cgroup_dirs(driver: &ProcessDriver, id: &str) -> Vec<PathBuf> {
    driver.cgroup_parents().iter().map(|p| p.join(id)).collect()
}

#[tokio::test]
async fn the_sandbox_is_real() {
    let (_g, driver) = driver(ProcessDriverConfig {
        network: NetworkMode::None,
        tmp_size_mb: 2,
        ..config("the_sandbox_is_real")
    });
    let health = driver.health().await;
    assert_eq!(health["sandbox"], "bwrap");
    assert_eq!(health["network"], "none");
    assert_eq!(health["unsandboxed"], false);

    let iofs = open_tempdir(0o777);
    std::fs::write(iofs.path().join("from-host"), "host-data").unwrap();
    let f = script_fn(
        r#"echo "uid=$(id -u)"
grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\t'
touch /usr/x 2>/dev/null && echo usr=rw || echo usr=ro
touch /etc/x 2>/dev/null && echo etc=rw || echo etc=ro
touch /function/x 2>/dev/null && echo function=rw || echo function=ro
touch /tmp/x 2>/dev/null && echo tmp=rw || echo tmp=ro
head -c 1000000 /dev/zero > /tmp/small 2>/dev/null && echo tmpsmall=ok || echo tmpsmall=full
head -c 3000000 /dev/zero > /tmp/big 2>/dev/null && echo tmpbig=ok || echo tmpbig=full
echo inside-data > /tmp/iofs/from-inside && echo iofs=rw
echo "hostfile=$(cat /tmp/iofs/from-host)"
echo "ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ',')"
echo "pwd=$(pwd)"
echo "pid=$$"
cat /etc/shadow >/dev/null 2>&1 && echo shadow=readable || echo shadow=denied
grep -E '^Seccomp:' /proc/self/status | tr -d '\t'
/usr/bin/python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.syscall(KEYCTL, 1, 0); print("keyctl=%d,%d" % (r, ctypes.get_errno()))'
echo "envkeys=$(env | cut -d= -f1 | sort | tr '\n' ',')"
"#,
    );
    let script = std::fs::read_to_string(f.path().join("run.sh")).unwrap();
    std::fs::write(
        f.path().join("run.sh"),
        script.replace("KEYCTL", &libc::SYS_keyctl.to_string()),
    )
    .unwrap();
    let mut spec = spec(f.path(), 64);
    spec.iofs_dir = Some(iofs.path().to_path_buf());
    let mut inst = driver.start(spec).await.expect("start");
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(exit.code, 0, "stdout: {out}\nstderr: {err}");
    let get = |k: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {k}= in {out}"))
    };
    assert_eq!(get("uid"), "65534");
    assert_eq!(
        out.lines().find(|l| l.starts_with("CapEff:")),
        Some("CapEff:0000000000000000")
    );
    assert_eq!(
        out.lines().find(|l| l.starts_with("NoNewPrivs:")),
        Some("NoNewPrivs:1")
    );
    assert_eq!(get("usr"), "ro");
    assert_eq!(get("etc"), "ro");
    assert_eq!(get("function"), "ro");
    assert_eq!(get("tmp"), "rw");
    assert_eq!(get("tmpsmall"), "ok");
    assert_eq!(get("tmpbig"), "full", "/tmp is limited to 2 MiB");
    assert_eq!(get("iofs"), "rw");
    assert_eq!(get("hostfile"), "host-data");
    assert_eq!(get("ifaces"), "lo,");
    assert_eq!(get("pwd"), "/function");
    assert_eq!(get("pid"), "2", "a new pid namespace (bwrap's init is 1)");
    assert_eq!(get("shadow"), "denied");
    // The seccomp filter is on: keyctl answers EPERM (it succeeds without).
    assert_eq!(health["seccomp"], true);
    assert_eq!(
        out.lines().find(|l| l.starts_with("Seccomp:")),
        Some("Seccomp:2")
    );
    assert_eq!(get("keyctl"), format!("-1,{}", libc::EPERM));
    // Only what the driver documents plus the spec's env (and what sh sets).
    let keys: Vec<String> = get("envkeys")
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    for k in &keys {
        assert!(
            ["FOO", "PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL", "_"].contains(&k.as_str()),
            "unexpected env var {k} in the sandbox: {keys:?}"
        );
    }
    assert!(keys.contains(&"FOO".to_string()));
    // The host sees the file written inside, owned by the sandbox uid.
    let md = std::fs::metadata(iofs.path().join("from-inside")).unwrap();
    assert_eq!(md.uid(), 65534);
    assert_eq!(
        std::fs::read_to_string(iofs.path().join("from-inside")).unwrap(),
        "inside-data\n"
    );
    assert_eq!(driver.iofs_mount(iofs.path()), IOFS_MOUNT);
}

#[tokio::test]
async fn out_of_memory_is_reported() {
    let (_g, driver) = driver(config("out_of_memory_is_reported"));
    let f =
        script_fn("exec /usr/bin/python3 -c \"x = b'a' * (256 << 20); print('survived', len(x))\"");
    let mut inst = driver.start(spec(f.path(), 32)).await.expect("start");
    let dirs = cgroup_dirs(&driver, inst.id());
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert!(!out.contains("survived"), "stdout: {out}\nstderr: {err}");
    assert_eq!(
        exit,
        ExitInfo {
            code: 137,
            oom_killed: true
        },
        "stderr: {err}"
    );
    assert!(dirs.iter().all(|d| !exists(d)));
}

#[tokio::test]
async fn within_the_memory_limit_nothing_is_oom_killed() {
    let (_g, driver) = driver(config("within_the_memory_limit_nothing_is_oom_k"));
    let f =
        script_fn("exec /usr/bin/python3 -c \"x = b'a' * (8 << 20); print('survived', len(x))\"");
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(out, format!("survived {}\n", 8 << 20), "stderr: {err}");
    assert_eq!(exit, ExitInfo::default());
}

#[tokio::test]
async fn the_pids_limit_bounds_a_fork_bomb() {
    let limit = 20;
    let (_g, driver) = driver(ProcessDriverConfig {
        max_pids: limit,
        ..config("the_pids_limit_bounds_a_fork_bomb")
    });
    let d = script_fn("exec /usr/bin/python3 /function/bomb.py");
    std::fs::write(
        d.path().join("bomb.py"),
        r#"import os, sys, time
ok = fail = 0
for i in range(200):
    try:
        pid = os.fork()
    except OSError:
        fail += 1
        continue
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    ok += 1
print(ok, fail, flush=True)
time.sleep(120)
"#,
    )
    .unwrap();
    let mut inst = driver.start(spec(d.path(), 128)).await.expect("start");
    let dirs = cgroup_dirs(&driver, inst.id());
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    tokio::time::timeout(BOUND, BufReader::new(&mut io.stdout).read_line(&mut line))
        .await
        .expect("bomb reported in time")
        .unwrap();
    let nums: Vec<u32> = line
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (ok, fail) = (nums[0], nums[1]);
    assert!(fail > 0, "some forks must fail: {line}");
    assert!(ok < limit, "at most the limit may run: {line}");
    assert_eq!(ok + fail, 200);
    // Count from the host: the pids cgroup holds no more than the limit.
    let pids_dir = dirs.last().unwrap();
    let current: u32 = std::fs::read_to_string(pids_dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= limit, "pids.current {current}");
    let pids: Vec<i32> = std::fs::read_to_string(pids_dir.join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(pids.len() as u32 <= limit && pids.len() as u32 >= ok);
    inst.destroy().await;
    assert!(pids.iter().all(|p| !alive(*p)), "survivors of destroy");
    assert!(dirs.iter().all(|d| !exists(d)));
    assert_eq!(inst.wait().await.code, 137);
}

#[tokio::test]
async fn destroy_leaves_no_process_and_no_cgroup() {
    let (_g, driver) = driver(config("destroy_leaves_no_process_and_no_cgroup"));
    let f = script_fn("sleep 1000 & (sleep 1000 &) ; echo ready; wait");
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let dirs = cgroup_dirs(&driver, inst.id());
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    tokio::time::timeout(BOUND, BufReader::new(&mut io.stdout).read_line(&mut line))
        .await
        .expect("ready in time")
        .unwrap();
    assert_eq!(line, "ready\n");
    let pids: Vec<i32> = std::fs::read_to_string(dirs[0].join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    // bwrap, bwrap's init, sh and the two sleeps.
    assert!(pids.len() >= 4, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    tokio::time::timeout(BOUND, inst.destroy())
        .await
        .expect("destroy in time");
    for p in &pids {
        assert!(
            !alive(*p),
            "pid {p} survived destroy: {:?}",
            std::fs::read_to_string(format!("/proc/{p}/stat"))
        );
    }
    assert!(dirs.iter().all(|d| !exists(d)), "{dirs:?}");
    assert_eq!(inst.wait().await.code, 137);
    // Idempotent.
    inst.destroy().await;
}

#[tokio::test]
async fn dropping_an_instance_kills_it() {
    let (_g, driver) = driver(config("dropping_an_instance_kills_it"));
    let f = script_fn("echo ready; exec sleep 1000");
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let dirs = cgroup_dirs(&driver, inst.id());
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    BufReader::new(&mut io.stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let pids: Vec<i32> = std::fs::read_to_string(dirs[0].join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    drop(inst);
    // stdout reaches EOF once every holder of the pipe is dead.
    let mut rest = Vec::new();
    tokio::time::timeout(BOUND, io.stdout.read_to_end(&mut rest))
        .await
        .expect("EOF in time")
        .unwrap();
    // The reaper removes the cgroup after the kill: bounded poll.
    for _ in 0..500 {
        if dirs.iter().all(|d| !exists(d)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(dirs.iter().all(|d| !exists(d)), "{dirs:?}");
    assert!(pids.iter().all(|p| !alive(*p)));
}

#[tokio::test]
async fn cold_calls_get_stdin() {
    let (_g, driver) = driver(config("cold_calls_get_stdin"));
    let f = script_fn("tr a-z A-Z");
    let mut spec = spec(f.path(), 64);
    spec.stdin = true;
    let mut inst = driver.start(spec).await.expect("start");
    let mut io = inst.take_io().unwrap();
    let mut stdin = io.stdin.take().expect("stdin");
    stdin.write_all(b"ping\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    drop(stdin);
    let mut out = String::new();
    tokio::time::timeout(BOUND, io.stdout.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "PING\n");
    assert_eq!(inst.wait().await.code, 0);
    assert!(inst.take_io().is_none());
}

#[tokio::test]
async fn a_failing_entrypoint_ends_the_instance() {
    let (_g, driver) = driver(config("a_failing_entrypoint_ends_the_instance"));
    let f = script_fn("true");
    std::fs::write(
        f.path().join("func.yaml"),
        "entrypoint: ./does-not-exist --flag\n",
    )
    .unwrap();
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let (_out, err, exit) = run_to_end(&mut inst).await;
    assert_ne!(exit.code, 0);
    assert!(err.contains("does-not-exist"), "{err}");
}

#[tokio::test]
async fn cleanup_leftovers_kills_and_removes() {
    let (_g, driver) = driver(config("cleanup_leftovers_kills_and_removes"));
    let parents = driver.cgroup_parents();
    assert!(!parents.is_empty());
    // A cgroup as a crashed server would leave it, with a live process.
    let left: Vec<PathBuf> = parents.iter().map(|p| p.join("LEFTOVER01")).collect();
    for d in &left {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    for d in &left {
        std::fs::write(d.join("cgroup.procs"), child.id().to_string()).unwrap();
    }
    assert!(alive(child.id() as i32));
    driver.cleanup_leftovers().await.expect("cleanup");
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    assert!(left.iter().all(|d| !exists(d)), "{left:?}");
    // Nothing to do the second time.
    driver.cleanup_leftovers().await.expect("cleanup");
}

#[tokio::test]
async fn check_image_enforces_roots_and_access() {
    let allowed = open_tempdir(0o755);
    let other = open_tempdir(0o755);
    let (_g, driver) = driver(ProcessDriverConfig {
        roots: vec![allowed.path().to_path_buf()],
        ..config("check_image_enforces_roots_and_access")
    });
    let good = allowed.path().join("fn1");
    std::fs::create_dir(&good).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(good.join("func.yaml"), "entrypoint: node func.js\n").unwrap();
    assert!(driver.handles(&image(&good)));
    assert!(!driver.handles("fnproject/hello:0.0.1"));
    driver.check_image(&image(&good)).await.expect("allowed");

    let bad_msg = |e: DriverError| match e {
        DriverError::BadImage(m) => m,
        other => panic!("expected BadImage, got {other:?}"),
    };
    // Outside the roots.
    let out = other.path().join("fn2");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(out.join("func.yaml"), "entrypoint: node func.js\n").unwrap();
    let m = bad_msg(driver.check_image(&image(&out)).await.unwrap_err());
    assert!(m.contains("not under an allowed root"), "{m}");
    // A symlink inside a root pointing outside does not escape.
    std::os::unix::fs::symlink(&out, allowed.path().join("escape")).unwrap();
    let m = bad_msg(
        driver
            .check_image(&image(&allowed.path().join("escape")))
            .await
            .unwrap_err(),
    );
    assert!(m.contains("not under an allowed root"), "{m}");
    // `..` does not escape either.
    let dotdot = format!(
        "{}/../{}",
        image(allowed.path()),
        other.path().file_name().unwrap().to_str().unwrap()
    );
    let m = bad_msg(driver.check_image(&dotdot).await.unwrap_err());
    assert!(m.contains("not under an allowed root"), "{m}");
    // Missing directory, relative path, wrong scheme.
    let m = bad_msg(
        driver
            .check_image(&image(&allowed.path().join("missing")))
            .await
            .unwrap_err(),
    );
    assert!(m.contains("missing"), "{m}");
    bad_msg(driver.check_image("file://relative/x").await.unwrap_err());
    bad_msg(driver.check_image("docker.io/x:1").await.unwrap_err());
    // Not readable by the sandbox user.
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();
    let m = bad_msg(driver.check_image(&image(&good)).await.unwrap_err());
    assert!(m.contains("not readable by uid 65534"), "{m}");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
    // func.yaml without anything to run, and none at all.
    std::fs::write(good.join("func.yaml"), "name: x\nruntime: node\n").unwrap();
    let m = bad_msg(driver.check_image(&image(&good)).await.unwrap_err());
    assert!(m.contains("no entrypoint"), "{m}");
    std::fs::remove_file(good.join("func.yaml")).unwrap();
    let m = bad_msg(driver.check_image(&image(&good)).await.unwrap_err());
    assert!(m.contains("func.yaml"), "{m}");
    // Start refuses the same way.
    let r = driver.start(spec(&out, 64)).await;
    assert!(matches!(r, Err(DriverError::BadImage(_))));
    // An iofs directory the sandbox user cannot reach is refused up front.
    std::fs::write(good.join("func.yaml"), "entrypoint: ./run\n").unwrap();
    let iofs = open_tempdir(0o700);
    let mut s = spec(&good, 64);
    s.iofs_dir = Some(iofs.path().to_path_buf());
    match driver.start(s).await {
        Err(DriverError::Internal(m)) => assert!(m.contains("iofs"), "{m}"),
        Err(e) => panic!("expected Internal, got {e:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

/// `func.yaml` is the fn author's: read as the sandbox user could, never
/// through a link, never blocking, never echoed.
#[tokio::test]
async fn func_yaml_is_read_safely_as_the_sandbox_user() {
    let (_g, driver) = driver(config("func_yaml_is_read_safely_as_the_sandbox_user"));
    let bad_msg = |e: DriverError| match e {
        DriverError::BadImage(m) => m,
        other => panic!("expected BadImage, got {other:?}"),
    };
    let d = open_tempdir(0o755);
    let fy = d.path().join("func.yaml");
    std::fs::write(&fy, "entrypoint: TOPSECRET\n").unwrap();
    std::fs::set_permissions(&fy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let m = bad_msg(driver.check_image(&image(d.path())).await.unwrap_err());
    assert!(m.contains("func.yaml is not readable by uid 65534"), "{m}");
    assert!(!m.contains("TOPSECRET"), "{m}");
    std::fs::remove_file(&fy).unwrap();
    // A FIFO answers at once (and twice: nothing is left stuck).
    nix::unistd::mkfifo(&fy, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for _ in 0..2 {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            driver.check_image(&image(d.path())),
        )
        .await
        .expect("check_image of a FIFO returns");
        let m = bad_msg(r.unwrap_err());
        assert!(m.contains("not a regular file"), "{m}");
    }
    std::fs::remove_file(&fy).unwrap();
    // A link to a world-readable file in a directory the sandbox user
    // cannot enter: refused, the content not shown.
    let vault = open_tempdir(0o700);
    let secret = vault.path().join("secret");
    std::fs::write(&secret, "TOPSECRET line one\nTOPSECRET: two\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&secret, &fy).unwrap();
    let m = bad_msg(driver.check_image(&image(d.path())).await.unwrap_err());
    assert!(m.contains("symbolic link"), "{m}");
    assert!(!m.contains("TOPSECRET"), "{m}");
    let r = driver.start(spec(d.path(), 64)).await;
    assert!(matches!(r, Err(DriverError::BadImage(m)) if !m.contains("TOPSECRET")));
}

#[tokio::test]
async fn auto_without_bwrap_falls_back_loudly() {
    let missing = PathBuf::from("/nonexistent/fnrs-test/bwrap");
    let r = ProcessDriver::new(ProcessDriverConfig {
        sandbox: SandboxMode::Bwrap,
        bwrap: Some(missing.clone()),
        ..config("auto_without_bwrap_falls_back_loudly")
    });
    assert!(
        matches!(&r, Err(DriverError::Unavailable(m)) if m.contains("not found")),
        "{r:?}"
    );

    let (_g, driver) = driver(ProcessDriverConfig {
        sandbox: SandboxMode::Auto,
        bwrap: Some(missing),
        ..config("auto_without_bwrap_falls_back_loudly")
    });
    assert!(!driver.sandboxed());
    let h = driver.health().await;
    assert_eq!(h["unsandboxed"], true, "{h}");
    assert_eq!(h["sandbox"], "none");
    let warnings = h["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("UNSANDBOXED")),
        "{h}"
    );
    let iofs = open_tempdir(0o777);
    assert_eq!(
        driver.iofs_mount(iofs.path()),
        iofs.path().to_str().unwrap()
    );
    // Still a separate uid, no new privileges, limits and the function dir as cwd.
    let f = script_fn(
        r#"echo "uid=$(id -u)"; echo "pwd=$(pwd)"; grep NoNewPrivs /proc/self/status | tr -d '\t'; echo "ls=$(ls | tr '\n' ' ')""#,
    );
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let dirs = cgroup_dirs(&driver, inst.id());
    assert!(!dirs.is_empty());
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(exit.code, 0, "{err}");
    let canon = std::fs::canonicalize(f.path()).unwrap();
    assert_eq!(
        out,
        format!(
            "uid=65534\npwd={}\nNoNewPrivs:1\nls=func.yaml run.sh \n",
            canon.display()
        )
    );
    assert!(dirs.iter().all(|d| !exists(d)));
}

/// Plays a server in a child process for `instances_die_with_the_server`:
/// starts an instance, prints the pids in its cgroup, then waits to be killed.
#[tokio::test]
#[ignore = "helper process of instances_die_with_the_server"]
async fn crashing_server_helper() {
    let parent = std::env::var(HELPER_ENV).expect("run by instances_die_with_the_server");
    let driver = ProcessDriver::new(ProcessDriverConfig {
        cgroup_parent: parent,
        ..config("unused")
    })
    .expect("driver");
    let f = script_fn("sleep 1000 & echo ready; exec sleep 1000");
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    BufReader::new(&mut io.stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let dirs = cgroup_dirs(&driver, inst.id());
    let pids = std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap();
    println!(
        "PIDS {}",
        pids.split_whitespace().collect::<Vec<_>>().join(",")
    );
    // Keep the function dir; the parent test removes it.
    println!("FNDIR {}", f.keep().display());
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
}

#[tokio::test]
async fn instances_die_with_the_server_and_leftovers_are_cleaned() {
    let name = "instances_die_with_the_server";
    let (_g, driver) = driver(config(name));
    // The server crashes; everything it started dies with it.
    let (pids, fn_dir) =
        crash_helper_server("crashing_server_helper", &format!("fnrs-test-pd-{name}"));
    assert!(pids.len() >= 4, "helper output: {pids:?}");
    // Its cgroup is left behind; the next server's start removes it.
    let left = cgroups_left(&driver);
    assert!(!left.is_empty(), "the crashed server's cgroup");
    driver.cleanup_leftovers().await.unwrap();
    assert!(left.iter().all(|d| !exists(d)), "{left:?}");
    if let Some(d) = fn_dir {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[tokio::test]
async fn without_seccomp_the_filtered_call_works() {
    let (_g, driver) = driver(ProcessDriverConfig {
        seccomp: false,
        ..config("without_seccomp_the_filtered_call_works")
    });
    assert_eq!(driver.health().await["seccomp"], false);
    let f = script_fn(&format!(
        "grep -E '^Seccomp:' /proc/self/status | tr -d '\\t'\n\
         /usr/bin/python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); \
         r = l.syscall({}, 1, 0); print(\"keyctl_ok=%d\" % (r > 0))'",
        libc::SYS_keyctl
    ));
    let mut inst = driver.start(spec(f.path(), 64)).await.expect("start");
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(exit.code, 0, "{err}");
    assert_eq!(out, "Seccomp:0\nkeyctl_ok=1\n", "{err}");
}

#[tokio::test]
async fn a_dead_servers_cgroup_parent_is_removed_whole() {
    let parent = "fnrs-test-pd-dead-server/01DEADSERVER";
    // The dead server's tree, made by a driver of its own, with a live
    // leftover instance.
    let d = ProcessDriver::new(ProcessDriverConfig {
        cgroup_parent: parent.to_string(),
        // A dead server's launchers died with it: none here either.
        pool_size: 0,
        ..config("unused")
    })
    .expect("driver");
    let parents = d.cgroup_parents();
    let f = script_fn("echo ready; exec sleep 1000");
    let mut inst = d.start(spec(f.path(), 64)).await.expect("start");
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    BufReader::new(&mut io.stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let pids: Vec<i32> = std::fs::read_to_string(parents[0].join(inst.id()).join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!pids.is_empty());
    let removed = fnrs_driver_process::cleanup_cgroup_parent(parent)
        .await
        .expect("cleanup");
    assert_eq!(removed, 1);
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(parents.iter().all(|p| !exists(p)), "{parents:?}");
    assert_eq!(inst.wait().await.code, 137);
    // Nothing there any more: not an error.
    assert_eq!(
        fnrs_driver_process::cleanup_cgroup_parent(parent)
            .await
            .unwrap(),
        0
    );
    for p in &parents {
        let _ = std::fs::remove_dir(p.parent().unwrap());
    }
}

#[tokio::test]
async fn a_cancelled_start_leaves_nothing() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let (_g, driver) = driver(config("a_cancelled_start_leaves_nothing"));
    // A sleep length no other test uses, to find survivors by.
    let f = script_fn("exec sleep 987654");
    // The spawner thread may win the race and finish the start before the
    // caller gives up: try a few times, every outcome must leave nothing,
    // and at least one must be a real cancellation.
    let mut cancelled = 0;
    for _ in 0..10 {
        let s = spec(f.path(), 64);
        let dirs = cgroup_dirs(&driver, &s.id);
        {
            let mut fut = Box::pin(driver.start(s));
            // Poll start() until it made the cgroup (the image is resolved
            // on a blocking thread first); then the caller gives up.
            for _ in 0..2000 {
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Pending if dirs.iter().all(exists) => {
                        cancelled += 1;
                        break;
                    }
                    Poll::Pending => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                    Poll::Ready(r) => {
                        drop(r.expect("start"));
                        break;
                    }
                }
            }
        }
        // Bounded poll: the cgroup and anything that got into it go away.
        for _ in 0..500 {
            if dirs.iter().all(|d| !exists(d)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(dirs.iter().all(|d| !exists(d)), "{dirs:?}");
    }
    assert!(cancelled > 0, "no start was ever cancelled mid-way");
    // No sandboxed sleep survived.
    for _ in 0..500 {
        if processes_running("sleep\0987654\0").is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("a sandboxed sleep survived a cancelled start");
}
