//! A hostile function against the process driver (real bwrap, real cgroups,
//! real mounts; run as root): descriptors the server holds, shell
//! evaluation of its environment, a pooled start that fails.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use common::*;
use fnrs_driver::Driver;
use fnrs_driver_process::{NetworkMode, ProcessDriver, ProcessDriverConfig};

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
            // Launchers outside the sandbox get no private network.
            network: if uid == 0 {
                NetworkMode::None
            } else {
                NetworkMode::Private
            },
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

/// Config a function's owner (or a caller, through Fn's `FN_HEADER_*`)
/// controls, aimed at a shell that would evaluate it: names bash itself
/// uses, and values that expand, chain or look like options. `names`: also
/// names that are no shell identifiers (a launcher may take another way
/// then).
fn hostile_env(names: bool) -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = &[
        ("n", "a[$(echo PWNED-n >&2)]"),
        ("A", "$(echo PWNED-A >&2)"),
        ("fd", "0"),
        ("kv", "x=y"),
        ("v", "`echo PWNED-v >&2`"),
        ("PS4", "$(echo PWNED-ps4 >&2)"),
        ("BASH_ENV", "/proc/self/fd/0"),
        ("ENV", "/proc/self/fd/0"),
        ("IFS", "/="),
        ("SHELLOPTS", "xtrace"),
        ("BASHOPTS", "extdebug"),
        ("RANDOM", "7"),
        ("SECONDS", "99"),
        ("UID", "12345"),
        ("EXECIGNORE", "*"),
        ("PATH", "/usr/bin:/bin"),
        ("semi", "a; echo PWNED-semi >&2"),
        ("lines", "one\ntwo\n$(echo PWNED-lines >&2)\n"),
        ("dash", "-i"),
        ("dashes", "--"),
        ("empty", ""),
        ("eq", "=a=b="),
    ];
    let odd: &[(&str, &str)] = &[
        ("-i", "leading dash key"),
        ("--", "x"),
        ("FN_HEADER_X-Custom-Header", "-u PATH"),
        ("sp ace", " x  y "),
    ];
    let odd = if names { odd } else { &[] };
    pairs
        .iter()
        .chain(odd)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A function (python, no shell) in a file named `file`, run with the
/// arguments `x=1 -i --`, that prints them and its environment as JSON.
fn env_printer(file: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let f = script_fn("");
    std::fs::remove_file(f.path().join("run.sh")).unwrap();
    let run = f.path().join(file);
    std::fs::write(
        &run,
        "#!/usr/bin/python3\nimport json, os, sys\n\
         print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n",
    )
    .unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        f.path().join("func.yaml"),
        format!(
            "schema_version: 20180708\nname: t\nversion: 0.0.1\nentrypoint: ./{file} x=1 -i --\n"
        ),
    )
    .unwrap();
    f
}

#[tokio::test]
async fn config_reaches_the_function_unevaluated() {
    let plain = env_printer("run.py");
    // env(1) would take this argv[0] for a variable.
    let odd = env_printer("a=b.py");
    for (name, pool_size, uid) in [
        ("env_direct", 0, 65534),
        ("env_prebuilt", 1, 65534),
        ("env_launcher", 1, 0),
    ] {
        let (_g, driver) = driver(ProcessDriverConfig {
            pool_size,
            uid,
            gid: uid,
            // Launchers outside the sandbox get no private network.
            network: if uid == 0 {
                NetworkMode::None
            } else {
                NetworkMode::Private
            },
            ..config(name)
        });
        driver.cleanup_leftovers().await.unwrap();
        // Each set pooled (when there is a pool), then maybe directly (the
        // pool emptied by the first).
        for (round, names, f) in [
            (0, false, &plain),
            (1, false, &plain),
            (2, true, &plain),
            (3, true, &plain),
            (4, true, &odd),
        ] {
            if pool_size > 0 && round % 2 == 0 {
                pool_holds(&driver, 1).await;
            }
            let mut s = spec(f.path(), 128);
            s.env = hostile_env(names);
            let mut inst = driver.start(s).await.expect("start");
            let (out, err, exit) = run_to_end(&mut inst).await;
            assert_eq!(exit.code, 0, "{name} (round {round}): {out} {err}");
            assert!(!err.contains("PWNED"), "{name}: {err}");
            let got: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out} {err}"));
            assert_eq!(
                got["argv"],
                serde_json::json!(["x=1", "-i", "--"]),
                "{name}"
            );
            let got: std::collections::BTreeMap<String, String> =
                serde_json::from_value(got["env"].clone()).unwrap();
            let mut want: std::collections::BTreeMap<String, String> =
                // bwrap's --chdir sets PWD: the same on every path.
                [("HOME", "/tmp"), ("LANG", "C.UTF-8"), ("PWD", "/function")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            want.extend(hostile_env(names));
            assert_eq!(got, want, "{name} (round {round})");
        }
    }
}

#[tokio::test]
async fn a_failed_pooled_start_falls_back_to_a_direct_one() {
    let name = "pool_fallback";
    let (_g, driver) = driver(ProcessDriverConfig {
        pool_size: 1,
        ..config(name)
    });
    driver.cleanup_leftovers().await.unwrap();
    pool_holds(&driver, 1).await;
    // The waiting sandbox's mount point for the fn directory is gone (say,
    // a cleaner of /run got to it): mounting the fn there fails once its
    // cgroup is already the instance's.
    let root = Path::new("/run/fnrs-pool").join(format!("fnrs-test-pd-{name}"));
    let mut broken = 0;
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        std::fs::remove_dir(e.path().join("function")).unwrap();
        broken += 1;
    }
    assert_eq!(broken, 1);
    let f = script_fn("echo started");
    let s = spec(f.path(), 128);
    let id = s.id.clone();
    let mut inst = driver
        .start(s)
        .await
        .expect("a direct start after the pooled one failed");
    assert_eq!(inst.id(), id);
    let (out, err, exit) = run_to_end(&mut inst).await;
    assert_eq!((out.as_str(), exit.code), ("started\n", 0), "{err}");
    let left: Vec<_> = cgroups_left(&driver)
        .into_iter()
        .filter(|p| p.ends_with(&id))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
