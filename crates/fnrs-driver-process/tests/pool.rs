//! The launcher pool (prebuilt sandboxes) against real bubblewrap, real
//! cgroups and real mounts (run as root).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fnrs_driver::{Driver, ExitInfo};
use fnrs_driver_process::{ProcessDriver, ProcessDriverConfig};
use tokio::io::AsyncBufReadExt;

/// Wait (bounded) until the pool has `n` launchers waiting.
async fn pool_full(driver: &ProcessDriver, n: u64) {
    for _ in 0..3000 {
        if driver.health().await["pool"]["idle"].as_u64() == Some(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the pool never filled: {}", driver.health().await);
}

/// The waiting launchers' cgroup directories (memory hierarchy).
fn pool_cgroups(driver: &ProcessDriver) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&driver.cgroup_parents()[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("pool-")
        })
        .collect();
    v.sort();
    v
}

fn procs(cg: &Path) -> Vec<i32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn pool_root(parent: &str) -> PathBuf {
    PathBuf::from("/run/fnrs-pool").join(parent)
}

fn mounted_under(p: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_string_lossy();
    text.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&*p)))
}

#[tokio::test]
async fn pooled_sandboxes_run_with_the_same_limits_and_leave_nothing() {
    let name = "pooled_sandboxes";
    let parent = format!("fnrs-test-pd-{name}");
    let (_g, driver) = driver(ProcessDriverConfig {
        pool_size: 2,
        ..config(name)
    });
    driver.cleanup_leftovers().await.unwrap();
    pool_full(&driver, 2).await;
    let health = driver.health().await;
    assert_eq!(health["pool"]["prebuilt"], true, "{health}");
    let waiting = pool_cgroups(&driver);
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    let waiting_pids: Vec<i32> = waiting.iter().flat_map(|c| procs(c)).collect();
    assert!(!waiting_pids.is_empty());
    assert!(mounted_under(&pool_root(&parent)));

    // An instance from the pool (128 MB: the size pooled before any start).
    let iofs = open_tempdir(0o777);
    let f = script_fn(
        "id -u; echo \"foo=$FOO\"; pwd; ls /function; \
         (echo x > /function/w) 2>/dev/null && echo fn-rw || echo fn-ro; \
         echo in > /tmp/iofs/from-inside && echo iofs-rw; \
         grep -c . /proc/self/uid_map; \
         grep -E '^Seccomp:' /proc/self/status | tr -d '\\t'; \
         echo \"pid=$$\"; env | cut -d= -f1 | sort | tr '\\n' ,; echo; exit 3",
    );
    let mut s = spec(f.path(), 128);
    s.iofs_dir = Some(iofs.path().to_path_buf());
    let id = s.id.clone();
    let mut inst = driver.start(s).await.expect("start");
    let dirs: Vec<PathBuf> = driver
        .cgroup_parents()
        .iter()
        .map(|p| p.join(&id))
        .collect();
    assert!(dirs.iter().all(exists), "{dirs:?}");
    // It is one of the waiting launchers, now in the instance's cgroup.
    let pids = procs(&dirs[0]);
    assert!(
        pids.iter().any(|p| waiting_pids.contains(p)),
        "instance pids {pids:?}, pool pids {waiting_pids:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        (128u64 << 20).to_string()
    );
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("pids.max"))
            .unwrap()
            .trim(),
        "50"
    );
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(exit.code, 3, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534", "{out}");
    assert_eq!(lines[1], "foo=bar baz");
    assert_eq!(lines[2], "/function");
    assert!(
        lines.contains(&"func.yaml") && lines.contains(&"run.sh"),
        "{out}"
    );
    assert!(lines.contains(&"fn-ro"), "{out}");
    assert!(lines.contains(&"iofs-rw"), "{out}");
    assert!(lines.contains(&"Seccomp:2"), "{out}");
    assert!(lines.contains(&"pid=2"), "a new pid namespace: {out}");
    let env_line = lines.last().unwrap();
    for k in env_line.split(',').filter(|k| !k.is_empty()) {
        assert!(
            ["FOO", "PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL", "_"].contains(&k),
            "unexpected env var {k}: {env_line}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(iofs.path().join("from-inside")).unwrap(),
        "in\n"
    );
    // Its cgroup and mount directory are gone with it.
    assert!(dirs.iter().all(|d| !exists(d)), "{dirs:?}");

    // Names that are no shell identifiers (Fn's default format passes
    // headers as FN_HEADER_<name>) reach the function too.
    pool_full(&driver, 2).await;
    // (sh keeps them out of its own exports: read its environ.)
    let f = script_fn("tr '\\0' '\\n' < /proc/$$/environ");
    let mut s = spec(f.path(), 128);
    s.env
        .push(("FN_HEADER_X-Custom-Header".into(), "Custom Value".into()));
    let mut inst = driver.start(s).await.expect("start");
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(exit.code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l == "FN_HEADER_X-Custom-Header=Custom Value"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "FOO=bar baz"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{out}"
    );

    // The memory limit set on a taken launcher is enforced.
    pool_full(&driver, 2).await;
    let f =
        script_fn("exec /usr/bin/python3 -c \"x = b'a' * (256 << 20); print('survived', len(x))\"");
    // 32 MB: not pooled yet (a direct start), then pooled.
    for _ in 0..2 {
        let mut inst = driver.start(spec(f.path(), 32)).await.expect("start");
        let (out, err, exit) = run_to_end(&mut inst).await;
        assert!(!out.contains("survived"), "{out} {err}");
        assert_eq!(
            exit,
            ExitInfo {
                code: 137,
                oom_killed: true
            },
            "{err}"
        );
        for _ in 0..3000 {
            if driver.health().await["pool"]["idle"].as_u64() >= Some(3) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // A failing command in a prebuilt sandbox ends the instance.
    let bad = script_fn("true");
    std::fs::write(
        bad.path().join("func.yaml"),
        "entrypoint: ./does-not-exist\n",
    )
    .unwrap();
    let mut inst = driver.start(spec(bad.path(), 128)).await.expect("start");
    let (_out, err, exit) = run_to_end(&mut inst).await;
    assert_ne!(exit.code, 0);
    assert!(err.contains("does-not-exist"), "{err}");

    // Shutdown: every launcher dies, its cgroup and mounts go.
    let all_pids: Vec<i32> = pool_cgroups(&driver)
        .iter()
        .flat_map(|c| procs(c))
        .collect();
    assert!(!all_pids.is_empty());
    let parents = driver.cgroup_parents();
    drop(driver);
    for _ in 0..500 {
        if all_pids.iter().all(|p| !alive(*p)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(all_pids.iter().all(|p| !alive(*p)), "{all_pids:?}");
    for p in &parents {
        let left: Vec<PathBuf> = std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    assert!(!mounted_under(&pool_root(&parent)));
    assert!(!pool_root(&parent).exists());
}

/// Plays a server for `a_crashed_servers_pool_dies_and_is_cleaned`: fills
/// its pool, starts an instance, prints the pids, waits to be killed.
#[tokio::test]
#[ignore = "helper process of a_crashed_servers_pool_dies_and_is_cleaned"]
async fn crashing_pool_helper() {
    let parent = std::env::var(HELPER_ENV).expect("run by the test");
    let driver = ProcessDriver::new(ProcessDriverConfig {
        cgroup_parent: parent,
        pool_size: 2,
        ..config("unused")
    })
    .expect("driver");
    driver.cleanup_leftovers().await.unwrap();
    pool_full(&driver, 2).await;
    let f = script_fn("echo ready; exec sleep 1000");
    let mut inst = driver.start(spec(f.path(), 128)).await.expect("start");
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(&mut io.stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    pool_full(&driver, 2).await;
    let mut pids: Vec<i32> = std::fs::read_dir(&driver.cgroup_parents()[0])
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| procs(&e.path()))
        .collect();
    pids.sort();
    println!(
        "PIDS {}",
        pids.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("FNDIR {}", f.keep().display());
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
}

#[tokio::test]
async fn a_crashed_servers_pool_dies_and_is_cleaned() {
    let name = "crashed_pool";
    let parent = format!("fnrs-test-pd-{name}");
    let (pids, fn_dir) = crash_helper_server("crashing_pool_helper", &parent);
    // The instance (sleep, bwrap, …) and two waiting sandboxes.
    assert!(pids.len() >= 6, "helper output: {pids:?}");
    // Cgroups and mounts are left; the next server's start removes them.
    assert!(mounted_under(&pool_root(&parent)));
    let (_g, driver) = driver(ProcessDriverConfig {
        pool_size: 0,
        ..config(name)
    });
    let left = cgroups_left(&driver);
    assert!(left.len() >= 3, "{left:?}");
    driver.cleanup_leftovers().await.unwrap();
    assert!(left.iter().all(|d| !exists(d)), "{left:?}");
    // The pool's mounts too (a server without a pool cleans them as well).
    assert!(!mounted_under(&pool_root(&parent)));
    assert!(!pool_root(&parent).exists());
    if let Some(d) = fn_dir {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[tokio::test]
async fn a_fixed_tmp_size_uses_the_sandboxes_pooled_from_the_start() {
    // One /tmp size for every fn: the sandboxes pooled before any start
    // serve the first one, whatever its memory.
    let (_g, driver) = driver(ProcessDriverConfig {
        pool_size: 1,
        tmp_size_mb: 16,
        ..config("fixed_tmp_size")
    });
    driver.cleanup_leftovers().await.unwrap();
    pool_full(&driver, 1).await;
    let waiting: Vec<i32> = pool_cgroups(&driver)
        .iter()
        .flat_map(|c| procs(c))
        .collect();
    assert!(!waiting.is_empty());
    let f = script_fn("echo ready; exec sleep 100");
    let s = spec(f.path(), 64);
    let id = s.id.clone();
    let mut inst = driver.start(s).await.expect("start");
    let mut io = inst.take_io().unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(&mut io.stdout)
        .read_line(&mut line)
        .await
        .unwrap();
    let pids = procs(&driver.cgroup_parents()[0].join(&id));
    assert!(
        pids.iter().any(|p| waiting.contains(p)),
        "instance pids {pids:?}, pool pids {waiting:?}"
    );
    inst.destroy().await;
}
