//! A hostile function against the process driver (real bwrap, real cgroups,
//! real mounts; run as root): descriptors the server holds, shell
//! evaluation of its environment, a pooled start that fails.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use common::*;
use fnrs_driver::Driver;
use fnrs_driver_process::{ProcessDriver, ProcessDriverConfig};

/// Wait (bounded) until the pool has at least `n` launchers waiting.
async fn pool_holds(driver: &ProcessDriver, n: u64) {
    for _ in 0..3000 {
        if driver.health().await["pool"]["idle"].as_u64() >= Some(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the pool never filled: {}", driver.health().await);
}

/// The descriptor number the "server" (this test process) holds open
/// without close-on-exec, as a shell that started it would.
const LEAKED_FD: i32 = 47;

/// Open `file` for appending at [`LEAKED_FD`], inheritable (dup2 clears
/// close-on-exec on the copy).
fn hold_inheritable(file: &Path) -> OwnedFd {
    let f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    // SAFETY: dup2 onto a number this test owns; the result is owned once.
    unsafe {
        assert_eq!(libc::dup2(f.as_raw_fd(), LEAKED_FD), LEAKED_FD);
        let flags = libc::fcntl(LEAKED_FD, libc::F_GETFD);
        assert_eq!(flags & libc::FD_CLOEXEC, 0, "inheritable");
        OwnedFd::from_raw_fd(LEAKED_FD)
    }
}

/// Writes through the leaked descriptor and lists its own.
/// (dash redirects only fds 0-9: python writes.)
const FD_PROBE: &str = "/usr/bin/python3 -c 'import os; os.write(47, b\"pwned\")' 2>/dev/null \
                        && echo fd=open || echo fd=closed; \
                        echo \"fds=$(ls /proc/self/fd | tr '\\n' ,)\"";

async fn fd_probe(driver: &ProcessDriver) -> String {
    let f = script_fn(FD_PROBE);
    let mut inst = driver.start(spec(f.path(), 128)).await.expect("start");
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!(exit.code, 0, "{out} {err}");
    out
}

#[tokio::test]
async fn inherited_descriptors_do_not_reach_the_sandbox() {
    let host = tempfile::NamedTempFile::new().unwrap();
    let _fd = hold_inheritable(host.path());
    for (name, pool_size, uid) in [
        ("fd_direct", 0, 65534),
        ("fd_prebuilt", 1, 65534),
        // uid 0: the pooled launcher is a bash outside the sandbox that
        // execs bwrap.
        ("fd_launcher", 1, 0),
    ] {
        let (_g, driver) = driver(ProcessDriverConfig {
            pool_size,
            uid,
            gid: uid,
            ..config(name)
        });
        driver.cleanup_leftovers().await.unwrap();
        if pool_size > 0 {
            pool_holds(&driver, 1).await;
            let h = driver.health().await;
            assert_eq!(h["pool"]["prebuilt"], uid != 0, "{h}");
        }
        let out = fd_probe(&driver).await;
        assert!(out.contains("fd=closed"), "{name}: {out}");
        // ls's own: stdio (stdout a pipe) and the directory it reads.
        assert!(out.contains("fds=0,1,2,3,\n"), "{name}: {out}");
        assert_eq!(
            std::fs::read_to_string(host.path()).unwrap(),
            "",
            "{name}: the function wrote into the server's file"
        );
    }
}
