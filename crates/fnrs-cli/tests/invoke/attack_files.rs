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

/// A directory with files and a subdirectory, to see that nothing in it
/// is removed or replaced.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fnrs-canary-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("keep.txt"), "canary").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/keep.txt"), "canary").unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn assert_untouched(&self) {
        for f in ["keep.txt", "sub/keep.txt"] {
            let p = self.path().join(f);
            assert_eq!(
                std::fs::read_to_string(&p).ok().as_deref(),
                Some("canary"),
                "{} was touched",
                p.display()
            );
        }
        let n = std::fs::read_dir(self.path()).unwrap().count();
        assert_eq!(n, 2, "entries added to the canary");
    }
}

/// Run `fnrs serve` until it exits (bounded); its exit status and stderr.
fn serve_until_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(crate::common::BIN);
    cmd.arg("serve")
        .current_dir(data.path())
        .env("FN_PORT", "0")
        .env("FN_LISTEN", "127.0.0.1")
        .env(
            "FN_DB_URL",
            format!("sqlite3://{}", data.path().join("fn.db").display()),
        )
        .env("FN_LOG_LEVEL", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    for _ in 0..600 {
        if let Ok(Some(st)) = child.try_wait() {
            return (st, reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("fnrs kept running: {}", reader.join().unwrap());
}

/// `ln -s <canary> <FN_IOFS_PATH>/fnrs` before the server starts (as root
/// it would have removed the canary's content): refused, canary untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_iofs_root_link_is_refused_and_its_target_untouched() {
    let canary = Canary::new();
    let base = crate::common::iofs_base();
    std::os::unix::fs::symlink(canary.path(), base.path().join("fnrs")).unwrap();
    let base_s = base.path().display().to_string();
    let (st, err) = serve_until_exit(&[("FN_IOFS_PATH", &base_s)]);
    canary.assert_untouched();
    assert!(!st.success(), "fnrs started over a planted link: {err}");
    let fnrs = format!("{base_s}/fnrs");
    assert!(
        err.contains(&fnrs) && err.contains("symbolic link"),
        "the error names the path and the problem: {err}"
    );
    assert!(err.contains("FN_IOFS_PATH"), "and how to fix it: {err}");

    // A directory of another user, or writable by others, is refused too.
    std::fs::remove_file(base.path().join("fnrs")).unwrap();
    std::fs::create_dir(base.path().join("fnrs")).unwrap();
    std::os::unix::fs::chown(base.path().join("fnrs"), Some(65534), Some(65534)).unwrap();
    let (st, err) = serve_until_exit(&[("FN_IOFS_PATH", &base_s)]);
    assert!(
        !st.success() && err.contains(&fnrs) && err.contains("owned by uid 65534"),
        "{err}"
    );
    std::os::unix::fs::chown(base.path().join("fnrs"), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        base.path().join("fnrs"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let (st, err) = serve_until_exit(&[("FN_IOFS_PATH", &base_s)]);
    assert!(
        !st.success() && err.contains(&fnrs) && err.contains("writable"),
        "{err}"
    );
    // So is a base below a directory others may write to (no sticky bit).
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let inner = open.path().join("base");
    let (st, err) = serve_until_exit(&[("FN_IOFS_PATH", &inner.display().to_string())]);
    assert!(
        !st.success()
            && err.contains(&open.path().display().to_string())
            && err.contains("writable"),
        "{err}"
    );
}

/// What a crashed server left, with links planted inside: removed, links
/// not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_iofs_dirs_are_removed_without_following_links() {
    let canary = Canary::new();
    let base = crate::common::iofs_base();
    let dead = base.path().join("fnrs/01DEADSERVER0000000000000A");
    std::fs::create_dir_all(dead.join("01INSTANCE/sub")).unwrap();
    std::os::unix::fs::symlink(canary.path(), dead.join("01INSTANCE/link")).unwrap();
    std::os::unix::fs::symlink(canary.path(), dead.join("01INSTANCE/sub/link")).unwrap();
    std::os::unix::fs::symlink(canary.path(), dead.join("link")).unwrap();
    std::os::unix::fs::symlink(
        canary.path(),
        base.path().join("fnrs/01DEADSERVER0000000000000B"),
    )
    .unwrap();
    let s = Srv::start_in(base, &[]).await;
    canary.assert_untouched();
    let left: Vec<_> = std::fs::read_dir(s.iofs.path().join("fnrs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let id = s.server_id().await;
    assert_eq!(
        left,
        [std::ffi::OsString::from(&id)],
        "only this server's dir"
    );
    s.stop_and_check_clean(&id, &[]).await;
    canary.assert_untouched();
}

/// A function plants links to a host directory in its iofs directory: the
/// instance's end does not follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_an_instance_iofs_dir_are_not_followed() {
    let canary = Canary::new();
    let s = Srv::start().await;
    let d = crate::common::py_fn(&format!(
        r#"    os.symlink("{c}", "/tmp/iofs/link")
    os.mkdir("/tmp/iofs/d")
    os.symlink("{c}", "/tmp/iofs/d/link")
    os.symlink("{c}/keep.txt", "/tmp/iofs/d/file")
    return response.Response(ctx, response_data="planted")"#,
        c = canary.path().display()
    ));
    let f = s
        .func("planter", &d.image(), json!({"idle_timeout": 1}))
        .await;
    let a = s.invoke(&f, "").await;
    assert_eq!((a.status, a.body.as_str()), (200, "planted"), "{a:?}");
    // The instance idles out; its iofs dir goes.
    assert_eq!(s.until_instances(0).await, 0);
    canary.assert_untouched();
    // Again, ended by the shutdown this time.
    let a = s.invoke(&f, "").await;
    assert_eq!(a.status, 200, "{a:?}");
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
    canary.assert_untouched();
}

/// The bound of an instance's iofs directory (`FN_IOFS_OPTS` default).
const IOFS_BOUND: u64 = 1 << 20;

/// Mount points (decoded) of this mount namespace under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = format!("{}/", dir.display());
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// The one instance directory of a server (bounded wait).
async fn instance_dir(iofs: &Path, server_id: &str) -> std::path::PathBuf {
    let dir = iofs.join("fnrs").join(server_id);
    for _ in 0..100 {
        let found: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if let [one] = found.as_slice() {
            return one.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no single instance dir in {}", dir.display());
}

/// A Python FDK function: "fill" writes up to 64 MiB into its iofs
/// directory and answers "<bytes written> <errno>"; "mountinfo" answers its
/// /proc/self/mountinfo; anything else "ok".
fn filler() -> FnDir {
    crate::common::py_fn(
        r#"    body = data.getvalue().decode()
    if body == "fill":
        fd = os.open("/tmp/iofs/big", os.O_WRONLY | os.O_CREAT, 0o600)
        chunk = b"x" * 65536
        total, err = 0, 0
        try:
            while total < 64 * 1024 * 1024:
                total += os.write(fd, chunk)
        except OSError as e:
            err = e.errno
        os.close(fd)
        return response.Response(ctx, response_data="%d %d" % (total, err))
    if body == "mountinfo":
        text = open("/proc/self/mountinfo").read() + open("/proc/self/cgroup").read()
        print(text, file=sys.stderr, flush=True)
        return response.Response(ctx, response_data=text)
    return response.Response(ctx, response_data="ok")"#,
    )
}

/// A function writing 64 MiB into /tmp/iofs is stopped at the bound, on
/// the host too; it still serves; and its mountinfo shows no host path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_iofs_dir_is_a_small_tmpfs() {
    // A prebuilt sandbox gets it by mount propagation.
    iofs_tmpfs_bounds_the_function(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_iofs_dir_is_a_small_tmpfs_without_the_pool() {
    // bwrap binds it.
    iofs_tmpfs_bounds_the_function(&[("FN_PROCESS_POOL_SIZE", "0")], false).await;
}

async fn iofs_tmpfs_bounds_the_function(env: &[(&str, &str)], pooled: bool) {
    let s = Srv::start_with(env).await;
    assert_eq!(
        s.health().await["invoker"]["iofs_tmpfs"],
        "size=1m,nr_inodes=64,mode=0777"
    );
    let id = s.server_id().await;
    if pooled {
        s.pool_ready(1).await;
    }
    let d = filler();
    let f = s.func("filler", &d.image(), json!({})).await;
    let a = s.invoke(&f, "fill").await;
    assert_eq!(a.status, 200, "{a:?}");
    let (total, err) = a.body.split_once(' ').unwrap();
    let total: u64 = total.parse().unwrap();
    assert_eq!(err, "28", "ENOSPC after {total} bytes");
    assert!(total <= IOFS_BOUND, "{total} bytes written");
    // What the host holds for it.
    let inst = instance_dir(s.iofs.path(), &id).await;
    let held: u64 = std::fs::read_dir(&inst)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    assert!(held <= IOFS_BOUND, "the host holds {held} bytes");
    assert_eq!(mounts_under(s.iofs.path()), [inst.display().to_string()]);
    // Still serving.
    let a = s.invoke(&f, "again").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok"), "{a:?}");
    let a = s.invoke(&f, "mountinfo").await;
    assert_eq!(a.status, 200, "{a:?}");
    // The last mount there is the one the function sees.
    let iofs_line = a
        .body
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/tmp/iofs"))
        .unwrap_or_else(|| panic!("no /tmp/iofs mount: {}", a.body));
    assert_eq!(iofs_line.split(' ').nth(3), Some("/"), "{iofs_line}");
    assert_eq!(
        a.body.contains(" - tmpfs fnrs-pool "),
        pooled,
        "a prebuilt sandbox iff pooled: {}",
        a.body
    );
    assert!(
        !a.body.contains(&id) && !a.body.contains(&*s.iofs.path().to_string_lossy()),
        "the sandbox sees host paths of the iofs area: {}",
        a.body
    );
    let iofs = s.iofs.path().to_path_buf();
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
    assert!(mounts_under(&iofs).is_empty(), "mounts left");
}

/// A container's /tmp/iofs is the host's bounded tmpfs too: 64 MiB written
/// into it from inside stop at the bound, and the function still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_iofs_dir_is_a_small_tmpfs() {
    let image = std::env::var("FNRS_TEST_DOCKER_IMAGE_PYTHON")
        .expect("FNRS_TEST_DOCKER_IMAGE_PYTHON: run scripts/docker-setup.sh and source its env.sh");
    let s = Srv::start().await;
    let id = s.server_id().await;
    let f = s.func("py-docker", &image, json!({})).await;
    let a = s.invoke(&f, r#"{"name":"a"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    let out = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=fnrs.server={id}"))
        .output()
        .unwrap();
    let cid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !cid.is_empty() && !cid.contains('\n'),
        "one container: {cid:?}"
    );
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            &cid,
            "dd",
            "if=/dev/zero",
            "of=/tmp/iofs/big",
            "bs=64k",
            "count=1024",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("No space left"),
        "{err}"
    );
    let inst = instance_dir(s.iofs.path(), &id).await;
    let big = std::fs::metadata(inst.join("big")).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&big) * 512 <= IOFS_BOUND,
        "the host holds {} bytes",
        big.len()
    );
    let a = s.invoke(&f, r#"{"name":"b"}"#).await;
    assert_eq!(a.status, 200, "still serving: {a:?}");
    let iofs = s.iofs.path().to_path_buf();
    drop(s);
    assert!(mounts_under(&iofs).is_empty(), "mounts left");
}

/// After kill -9, the next start removes the dead server's leftovers (its
/// instance's tmpfs and iofs dir, its cgroups), then its lock file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_leftovers_and_lock_go_at_the_next_start() {
    let mut s = Srv::start().await;
    let dead = s.server_id().await;
    let d = filler();
    let f = s.func("filler", &d.image(), json!({})).await;
    assert_eq!(s.invoke(&f, "x").await.status, 200);
    let inst = instance_dir(s.iofs.path(), &dead).await;
    let lock = Path::new("/run/fnrs").join(format!("{dead}.lock"));
    s.server.kill9();
    assert!(lock.exists(), "a killed server leaves its lock file");
    assert_eq!(mounts_under(s.iofs.path()), [inst.display().to_string()]);
    s.server.restart().await.expect("restarts");
    let me = s.server_id().await;
    assert_ne!(me, dead);
    assert!(mounts_under(&s.iofs.path().join("fnrs").join(&dead)).is_empty());
    assert!(!s.iofs.path().join("fnrs").join(&dead).exists());
    assert!(!lock.exists(), "the dead server's lock file is removed");
    assert!(Path::new("/run/fnrs").join(format!("{me}.lock")).exists());
    crate::common::assert_clean(&dead, s.iofs.path(), &[d.dir.path()]).await;
    s.stop_and_check_clean(&me, &[d.dir.path()]).await;
    assert!(!Path::new("/run/fnrs").join(format!("{me}.lock")).exists());
}

/// A server in a container (`FN_IOFS_DOCKER_PATH`) keeps plain iofs
/// directories by default: the engine would not see its tmpfs mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fn_iofs_docker_path_no_tmpfs_by_default() {
    let image = std::env::var("FNRS_TEST_DOCKER_IMAGE_PYTHON")
        .expect("FNRS_TEST_DOCKER_IMAGE_PYTHON: run scripts/docker-setup.sh and source its env.sh");
    let base = crate::common::iofs_base();
    let path = base.path().display().to_string();
    let s = Srv::start_in(base, &[("FN_IOFS_DOCKER_PATH", &path)]).await;
    assert_eq!(s.health().await["invoker"]["iofs_tmpfs"], json!(null));
    let f = s.func("py-docker", &image, json!({})).await;
    let a = s.invoke(&f, r#"{"name":"a"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(mounts_under(s.iofs.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_during_a_start_leaves_no_iofs_dir_or_mount() {
    // Never creates its socket: the start waits until the client is gone.
    let d = FnDir::new(
        "./wait.sh",
        "http-stream",
        &[("wait.sh", "#!/bin/sh\nexec sleep 30\n")],
    );
    let s = Srv::start().await;
    let f = s.func("waits", &d.image(), json!({})).await;
    let id = s.server_id().await;
    let r = s
        .http
        .post(s.url(&format!("/invoke/{f}")))
        .timeout(Duration::from_millis(500))
        .body("x")
        .send()
        .await;
    assert!(r.is_err(), "the client gave up first: {r:?}");
    let dir = s.iofs.path().join("fnrs").join(&id);
    let mut left = Vec::new();
    for _ in 0..100 {
        left = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() && mounts_under(&dir).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left.is_empty(), "iofs dirs left: {left:?}");
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
}
