//! A start whose future is dropped part-way (a client hanging up during a
//! cold start) leaves nothing behind: no process of the sandbox, no pasta,
//! no cgroup, no mount. Also an Instance dropped without `destroy()`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use fnrs_driver::Driver;
use fnrs_driver_process::{ProcessDriver, ProcessDriverConfig};

/// Delays after which the start's future is dropped.
const DELAYS_MS: [u64; 8] = [0, 1, 2, 5, 10, 20, 50, 100];

/// Live children of this process named `pasta`.
fn our_pastas() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …
        let comm = stat.split('(').nth(1).and_then(|s| s.split(')').next());
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if comm == Some("pasta") && rest.get(1) == Some(&me.as_str()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Live processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) && alive(pid) {
                out.push(format!("{pid}: {c}"));
            }
        }
    }
    out
}

/// Mounts whose source or mount point names `needle`.
fn mounts_naming(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// What is left of instance `id` of `fn_dir` (sleeping `marker`), polled
/// (bounded) until nothing is. Each waiting pooled sandbox has a pasta.
async fn leftovers(driver: &ProcessDriver, id: &str, fn_dir: &Path, marker: &str) -> Vec<String> {
    let dir = fn_dir.display().to_string();
    let mut left = Vec::new();
    for _ in 0..400 {
        left.clear();
        left.extend(processes_naming(marker));
        left.extend(processes_naming(&dir));
        let pastas = driver.health().await["pool"]["idle"].as_u64().unwrap_or(0);
        let p = our_pastas();
        if p.len() as u64 > pastas {
            left.push(format!("pastas: {p:?}"));
        }
        for c in driver.cgroup_parents() {
            let c = c.join(id);
            if c.exists() {
                left.push(format!("cgroup {}", c.display()));
            }
        }
        left.extend(mounts_naming(&dir));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    left
}

async fn drop_starts_midway(name: &str, pool_size: usize) {
    let (_g, driver) = driver(ProcessDriverConfig {
        pool_size,
        ..config(name)
    });
    // Starts the pool filling.
    driver.cleanup_leftovers().await.unwrap();
    // One more than the delays: after completion, the Instance is dropped
    // without destroy().
    for (i, delay) in DELAYS_MS.iter().map(Some).chain([None]).enumerate() {
        if pool_size > 0 {
            // A waiting sandbox to take (else the start is direct).
            for _ in 0..500 {
                if driver.health().await["pool"]["idle"].as_u64() == Some(pool_size as u64) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let marker = format!("86400.{}{i}", std::process::id());
        let f = script_fn(&format!("exec sleep {marker}"));
        let s = spec(f.path(), 128);
        let id = s.id.clone();
        match delay {
            Some(ms) => {
                let start = driver.start(s);
                tokio::select! {
                    r = start => drop(r),
                    _ = tokio::time::sleep(Duration::from_millis(*ms)) => {}
                }
            }
            None => {
                let inst = tokio::time::timeout(BOUND, driver.start(s))
                    .await
                    .expect("started in time")
                    .expect("starts");
                drop(inst);
            }
        }
        let left = leftovers(&driver, &id, f.path(), &marker).await;
        assert!(
            left.is_empty(),
            "pool {pool_size}, dropped after {delay:?} ms: left {left:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_start_dropped_midway_leaves_nothing() {
    drop_starts_midway("cancel-direct", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_start_dropped_midway_leaves_nothing() {
    drop_starts_midway("cancel-pooled", 1).await;
}
