//! The launcher pool: sandboxes started ahead of need, up to the point
//! where they need to know what to run.
//!
//! Why: joining a cgroup costs ≈ 14 ms of wall time on cgroup v1 (the first
//! migration of a task takes `cgroup_threadgroup_rwsem` for writing, which
//! waits for an RCU grace period), and forking the server costs ≈ 2 ms of
//! CPU. A launcher pays both in the background: it is forked from a
//! dedicated thread (the pool's; `PR_SET_PDEATHSIG` is per thread and that
//! thread lives as long as the server), joins a fresh cgroup (named
//! `pool-<server pid>-<n>`, pids limit set, no memory limit yet), takes its
//! rlimits, drops to the sandbox uid, and execs `bash`, which waits on a
//! pipe for the NUL-separated command line of `bwrap` and then execs it.
//!
//! Taking a launcher for an instance renames its cgroup to the instance id
//! (a rename keeps the processes in it: no migration), sets the memory
//! limit, and writes bwrap's arguments; bwrap then builds the sandbox as it
//! would have when spawned directly, with the instance's environment given
//! as `--clearenv --setenv …` (bash's own variables do not reach the
//! function). Everything else is as in the direct path: the same uid, the
//! same rlimits, the same bwrap options, death with the server.
//!
//! The pool refills itself in the background after each take (after a short
//! delay, so that the refill's fork does not compete with the start it
//! follows), is emptied (processes killed, cgroups removed) when the driver
//! is dropped, and a crashed server's launchers die with it (pdeathsig) and
//! their cgroups are removed by the next start's leftover cleanup like any
//! instance's.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cgroup::{Cgroups, InstanceCgroup};
use crate::spawn::{self, ChildSetup, Rlimits};

/// What the launcher runs: read the whole pipe (fd `$1`) as NUL-separated
/// words, close it and exec them. An empty pipe (the server dropped the
/// launcher) ends it.
const SCRIPT: &str = r#"fd=$1; mapfile -d '' -t -u "$fd" A || exit 125; exec {fd}<&-; [ ${#A[@]} -gt 0 ] || exit 125; exec "${A[@]}""#;

/// What a prebuilt sandbox runs (inside it, as the sandbox uid, seccomp
/// on): read `N, N × KEY=VALUE, argv…` from fd `$1`, enter /function (the
/// function directory is mounted there after the sandbox was built) and
/// exec argv with exactly those variables (and `PWD`, as bwrap's `--chdir`
/// sets it) through `env -i`. bash only splits the words: the variables
/// never become bash's own (no `export`, which would evaluate `n=a[$(cmd)]`
/// in `$((n+1))`, refuse `UID` and fake `RANDOM`), and nothing of them is
/// evaluated. GNU env reads options up to `--`, then every word holding a
/// `=` as a variable: argv[0] must hold none ([`exec_through_env`]).
const SANDBOX_SCRIPT: &str = r#"fd=$1; mapfile -d '' -t -u "$fd" A || exit 125; exec {fd}<&-; n=${A[0]}; [[ $n =~ ^[0-9]+$ ]] && [ "${#A[@]}" -gt $((n+1)) ] || exit 125; cd /function || exit 125; exec /usr/bin/env -i -- PWD=/function "${A[@]:1:n}" "${A[@]:n+1}""#;

/// Whether [`SANDBOX_SCRIPT`] can run `argv`: `env` would take an argv[0]
/// with a `=` for one more variable.
pub(crate) fn exec_through_env(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| !a.contains('='))
}

/// The size pooled before any start: Fn's default memory (MB), unless
/// /tmp has one size for all.
const DEFAULT_KEY: u64 = 128;

/// How many /tmp sizes are pooled at most.
const MAX_KEYS: usize = 4;

/// How long after a take the pool waits before forking a replacement.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// How long the pool waits after failing to make a launcher.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// Where to find bash.
pub(crate) fn find_bash() -> Option<PathBuf> {
    spawn::find_program(None, &["/usr/bin/bash", "/bin/bash", "/usr/local/bin/bash"])
}

/// A waiting launcher. Dropping it kills it and removes its cgroup (on a
/// blocking thread when in a runtime; [`discard_now`] does it on this one).
pub(crate) struct Launcher {
    /// The bash process (`None` once handed over).
    child: Option<tokio::process::Child>,
    /// Write end of the argument pipe (`None` once launched).
    args: Option<OwnedFd>,
    /// The seccomp program's fd number in the launcher, for `--seccomp`.
    pub(crate) seccomp_fd: Option<RawFd>,
    /// Its cgroup (None without cgroups, or once handed over).
    cgroup: Option<InstanceCgroup>,
    /// Prebuilt sandboxes: the host directory holding the `function` and
    /// `iofs` mount points bound into it (None once handed over).
    dir: Option<PathBuf>,
    /// Prebuilt sandboxes: the /tmp size key ([`Pool::key`]).
    key: u64,
    /// The name of its cgroup and directory.
    name: OsString,
    /// Prebuilt sandboxes with a private network: its pasta, already
    /// attached (None once handed over).
    network: Option<crate::net::Pasta>,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
        if self.cgroup.is_none() && self.dir.is_none() && self.network.is_none() {
            return;
        }
        // Killing, removing the cgroup and unmounting take a while: in a
        // runtime, on a blocking thread rather than an async worker.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let mut rest = Launcher {
                    child: self.child.take(),
                    args: self.args.take(),
                    seccomp_fd: None,
                    cgroup: self.cgroup.take(),
                    dir: self.dir.take(),
                    key: self.key,
                    name: std::mem::take(&mut self.name),
                    network: self.network.take(),
                };
                h.spawn_blocking(move || rest.clean_up());
            }
            Err(_) => self.clean_up(),
        }
    }
}

impl Launcher {
    /// Kill it, remove its cgroup and its mount directory, on this thread.
    fn clean_up(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(Vec::new());
            let _ = cg.remove();
        }
        if let Some(d) = self.dir.take() {
            remove_launch_dir(&d);
        }
        drop(self.network.take());
    }

    /// Its cgroup.
    pub(crate) fn cgroup_mut(&mut self) -> Option<&mut InstanceCgroup> {
        self.cgroup.as_mut()
    }

    /// The process, the cgroup, the mount directory and the network, now
    /// the instance's.
    pub(crate) fn into_parts(
        mut self,
    ) -> (
        tokio::process::Child,
        Option<InstanceCgroup>,
        Option<PathBuf>,
        Option<crate::net::Pasta>,
    ) {
        let child = self
            .child
            .take()
            .expect("a launcher has its process until handed over");
        (
            child,
            self.cgroup.take(),
            self.dir.take(),
            self.network.take(),
        )
    }

    /// Whether this is a prebuilt sandbox (give it [`Launcher::run`]).
    pub(crate) fn prebuilt(&self) -> bool {
        self.dir.is_some()
    }

    /// Prebuilt sandboxes: mount the function directory (read-only) and
    /// the iofs directory into the waiting sandbox, then give it the
    /// environment and the command. On error [`discard`] it.
    pub(crate) fn run(
        &mut self,
        fn_dir: &Path,
        iofs: Option<&Path>,
        env: &[(String, String)],
        argv: &[String],
    ) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Err(io::Error::other("not a prebuilt sandbox"));
        };
        bind_into(fn_dir, &dir.join("function"), true)?;
        if let Some(iofs) = iofs {
            bind_into(iofs, &dir.join("iofs"), false)?;
        }
        let mut words: Vec<OsString> = vec![env.len().to_string().into()];
        for (k, v) in env {
            words.push(format!("{k}={v}").into());
        }
        words.extend(argv.iter().map(OsString::from));
        self.launch(&words)
    }

    /// Whether the process is still waiting (not exited).
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Give the launcher bwrap's command line (program first); it execs it.
    /// On error the launcher is unusable: [`discard`] it.
    pub(crate) fn launch(&mut self, argv: &[OsString]) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut buf = Vec::with_capacity(argv.iter().map(|a| a.len() + 1).sum());
        for a in argv {
            if a.as_bytes().contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "argument contains a NUL byte",
                ));
            }
            buf.extend_from_slice(a.as_bytes());
            buf.push(0);
        }
        let Some(args) = self.args.take() else {
            return Err(io::Error::other("launcher already used"));
        };
        let mut f = std::fs::File::from(args);
        // Usually far below the pipe's capacity; bash reads concurrently
        // when not. Dropping `f` closes the pipe: bash sees the end.
        f.write_all(&buf)
    }
}

/// Kill a launcher and remove its cgroup, on this thread.
pub(crate) fn discard_now(mut l: Launcher) {
    l.clean_up();
}

/// Kill a launcher and remove its cgroup (in the background when in a
/// runtime).
pub(crate) fn discard(l: Launcher) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(move || discard_now(l));
        }
        Err(_) => discard_now(l),
    }
}

/// What a launcher is made with (fixed for the driver's life).
pub(crate) struct LauncherConfig {
    pub(crate) bash: PathBuf,
    pub(crate) cgroups: Option<Cgroups>,
    pub(crate) max_pids: u32,
    pub(crate) rlimits: Rlimits,
    pub(crate) drop_to: Option<(u32, u32)>,
    pub(crate) seccomp: Option<Vec<u8>>,
    pub(crate) env: Vec<(String, String)>,
    /// Prebuilt sandboxes (else bash waits outside and execs bwrap).
    pub(crate) prebuilt: Option<Prebuilt>,
    /// Prebuilt sandboxes get a private network from this pasta.
    pub(crate) pasta: Option<PathBuf>,
}

/// How prebuilt sandboxes are made.
pub(crate) struct Prebuilt {
    pub(crate) bwrap: PathBuf,
    /// Namespaces, system directories, extra read-only paths.
    pub(crate) base_args: Vec<OsString>,
    /// [`crate::ENV_TMP_SIZE_MB`] (0: the fn's memory, a pool per size).
    pub(crate) tmp_size_mb: u64,
    /// A shared bind mount: mounts under it reach the sandboxes.
    pub(crate) root: PathBuf,
}

struct Inner {
    config: LauncherConfig,
    target: usize,
    idle: Mutex<Vec<Launcher>>,
    wake: Notify,
    started: AtomicBool,
    shutdown: AtomicBool,
    /// Prebuilt: the /tmp sizes pooled, most recently used first.
    keys: Mutex<Vec<u64>>,
    /// Held while a launcher is being made (shutdown waits for it).
    making: Mutex<()>,
    seq: AtomicU64,
}

/// The pool of waiting launchers.
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// A pool of `target` launchers (> 0). Nothing starts until
    /// [`Pool::start_filling`].
    pub(crate) fn new(config: LauncherConfig, target: usize) -> Self {
        // With one /tmp size for all, every start takes key 0.
        let first = match &config.prebuilt {
            Some(p) if p.tmp_size_mb > 0 => 0,
            _ => DEFAULT_KEY,
        };
        Pool {
            inner: Arc::new(Inner {
                config,
                target,
                idle: Mutex::new(Vec::new()),
                wake: Notify::new(),
                started: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
                making: Mutex::new(()),
                keys: Mutex::new(vec![first]),
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// Start the background filler (once; needs a tokio runtime).
    pub(crate) fn start_filling(&self) {
        if self.inner.shutdown.load(Ordering::Acquire) {
            return;
        }
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(fill(self.inner.clone()));
            } else {
                self.inner.started.store(false, Ordering::Release);
            }
        }
    }

    /// The pool key of an instance with `memory_mb`: its /tmp size for
    /// prebuilt sandboxes, else 0.
    pub(crate) fn key(&self, memory_mb: u64) -> u64 {
        match &self.inner.config.prebuilt {
            Some(p) if p.tmp_size_mb == 0 => memory_mb,
            _ => 0,
        }
    }

    /// A live launcher for `key`, if one is waiting. Wakes the filler.
    pub(crate) fn take(&self, key: u64) -> Option<Launcher> {
        self.start_filling();
        if self.inner.config.prebuilt.is_some() {
            let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.retain(|k| *k != key);
            keys.insert(0, key);
            keys.truncate(MAX_KEYS);
        }
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                if idle[i].key != key && self.inner.config.prebuilt.is_some() {
                    continue;
                }
                let mut l = idle.remove(i);
                if l.alive() {
                    found = Some(l);
                    break;
                }
                dead.push(l);
            }
            // Sizes no longer pooled.
            let keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
            let mut j = 0;
            while j < idle.len() {
                if self.inner.config.prebuilt.is_some() && !keys.contains(&idle[j].key) {
                    dead.push(idle.remove(j));
                } else {
                    j += 1;
                }
            }
            found
        };
        for l in dead {
            tracing::debug!("pooled launcher died while waiting");
            discard(l);
        }
        self.inner.wake.notify_one();
        found
    }

    /// Names of the cgroups and directories of the waiting launchers
    /// (kept by the leftover cleanup).
    pub(crate) fn names(&self) -> Vec<OsString> {
        let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter().map(|l| l.name.clone()).collect()
    }

    /// How many launchers are waiting.
    pub(crate) fn idle(&self) -> usize {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The pool's size.
    pub(crate) fn target(&self) -> usize {
        self.inner.target
    }

    /// Stop filling; kill the waiting launchers and remove their cgroups
    /// (on this thread: a few ms, plus the end of a launcher being made).
    pub(crate) fn shutdown(&self) {
        shutdown(&self.inner);
    }

    /// [`Pool::shutdown`] from elsewhere (a blocking thread).
    pub(crate) fn shutdown_fn(&self) -> impl FnOnce() + Send + 'static {
        let inner = Arc::clone(&self.inner);
        move || shutdown(&inner)
    }

    /// The shared root of prebuilt sandboxes' directories.
    pub(crate) fn root(&self) -> Option<&Path> {
        self.inner
            .config
            .prebuilt
            .as_ref()
            .map(|p| p.root.as_path())
    }
}

/// See [`Pool::shutdown`].
fn shutdown(inner: &Inner) {
    inner.shutdown.store(true, Ordering::Release);
    inner.wake.notify_one();
    // A launcher being made is discarded by its maker once done.
    drop(inner.making.lock().unwrap_or_else(|e| e.into_inner()));
    let idle: Vec<Launcher> =
        std::mem::take(&mut *inner.idle.lock().unwrap_or_else(|e| e.into_inner()));
    for l in idle {
        discard_now(l);
    }
    remove_root_if_unused(inner);
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// After shutdown: unmount and remove the shared root of prebuilt
/// sandboxes once no directory is left in it (an instance still running
/// keeps it; the next start's cleanup removes it then).
fn remove_root_if_unused(inner: &Inner) {
    if let Some(p) = &inner.config.prebuilt
        && std::fs::read_dir(&p.root).is_ok_and(|mut rd| rd.next().is_none())
    {
        unmount_all(&p.root);
        let _ = std::fs::remove_dir(&p.root);
    }
}

/// Keeps the pool full until shutdown.
async fn fill(inner: Arc<Inner>) {
    loop {
        if inner.shutdown.load(Ordering::Acquire) {
            return;
        }
        // The size most short of its target (one key without prebuilt).
        let (key, n) = {
            let keys: Vec<u64> = if inner.config.prebuilt.is_some() {
                inner.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
            } else {
                vec![0]
            };
            let idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .map(|k| (*k, idle.iter().filter(|l| l.key == *k).count()))
                .min_by_key(|(_, n)| *n)
                .unwrap_or((0, inner.target))
        };
        if n >= inner.target {
            inner.wake.notified().await;
            continue;
        }
        if n > 0 {
            // Let the start that just took one go first.
            tokio::time::sleep(REFILL_DELAY).await;
            if inner.shutdown.load(Ordering::Acquire) {
                return;
            }
        }
        let i = inner.clone();
        let made = spawn::on_pool_thread(move || make_launcher(&i, key)).await;
        match made {
            Some(Ok(())) => {}
            other => {
                if inner.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let e = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "pool thread failed".to_string(),
                };
                tracing::warn!(error = %e, "cannot start a pooled launcher");
                tokio::select! {
                    _ = tokio::time::sleep(FAILURE_BACKOFF) => {}
                    _ = inner.wake.notified() => {}
                }
            }
        }
    }
}

/// Fork one launcher (blocking: the cgroup join waits in the child, and the
/// fork returns once the child has exec'd bash). Run on the pool thread.
/// Make one launcher and put it in the pool, all while holding `making`:
/// once [`Pool::shutdown`] has taken that lock, every launcher made is
/// either in `idle` (drained there) or already discarded.
fn make_launcher(inner: &Inner, key: u64) -> io::Result<()> {
    let _making = inner.making.lock().unwrap_or_else(|e| e.into_inner());
    let stopped = || io::Error::other("the pool is shut down");
    if inner.shutdown.load(Ordering::Acquire) {
        return Err(stopped());
    }
    let l = make_launcher_inner(inner, key)?;
    let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
    if inner.shutdown.load(Ordering::Acquire) {
        drop(idle);
        discard_now(l);
        return Err(stopped());
    }
    idle.push(l);
    Ok(())
}

fn make_launcher_inner(inner: &Inner, key: u64) -> io::Result<Launcher> {
    let c = &inner.config;
    let n = inner.seq.fetch_add(1, Ordering::Relaxed);
    let name = format!("pool-{}-{n}", std::process::id());
    let cgroup = match &c.cgroups {
        Some(cgs) => Some(cgs.create(&name, 0, c.max_pids)?),
        None => None,
    };
    let dir = match &c.prebuilt {
        Some(p) => {
            let d = p.root.join(&name);
            let made = std::fs::create_dir(&d)
                .and_then(|()| std::fs::create_dir(d.join("function")))
                .and_then(|()| std::fs::create_dir(d.join("iofs")));
            if let Err(e) = made {
                remove_launch_dir(&d);
                if let Some(cg) = cgroup {
                    let _ = cg.remove();
                }
                return Err(e);
            }
            Some(d)
        }
        None => None,
    };
    let res = (|| {
        let (rd, wr) = spawn::pipe()?;
        let seccomp = match &c.seccomp {
            Some(p) => Some(crate::seccomp::program_fd(p)?),
            None => None,
        };
        let seccomp_fd = seccomp.as_ref().map(|f| f.as_raw_fd());
        let handshake = match (&c.prebuilt, &c.pasta) {
            (Some(_), Some(_)) => Some(crate::net::Handshake::new()?),
            _ => None,
        };
        let mut cmd = match (&c.prebuilt, &dir) {
            (Some(p), Some(d)) => {
                let mut cmd = tokio::process::Command::new(&p.bwrap);
                cmd.args(&p.base_args);
                if let Some(h) = &handshake {
                    cmd.args(h.bwrap_args());
                }
                if let Some(fd) = seccomp_fd {
                    cmd.arg("--seccomp").arg(fd.to_string());
                }
                if key > 0 || p.tmp_size_mb > 0 {
                    let mb = if p.tmp_size_mb > 0 {
                        p.tmp_size_mb
                    } else {
                        key
                    };
                    cmd.arg("--size")
                        .arg(mb.saturating_mul(1024 * 1024).to_string());
                }
                cmd.args(["--tmpfs", "/tmp", "--ro-bind"])
                    .arg(d.join("function"))
                    .arg(crate::FUNCTION_MOUNT)
                    .arg("--bind")
                    .arg(d.join("iofs"))
                    .arg(fnrs_driver::IOFS_MOUNT)
                    .args(["--chdir", "/", "--"])
                    .arg(&c.bash)
                    .args([
                        "--norc",
                        "--noprofile",
                        "-c",
                        SANDBOX_SCRIPT,
                        "fnrs-sandbox",
                    ]);
                cmd
            }
            _ => {
                let mut cmd = tokio::process::Command::new(&c.bash);
                cmd.args(["--norc", "--noprofile", "-c", SCRIPT, "fnrs-launcher"]);
                cmd
            }
        };
        cmd.arg(rd.as_raw_fd().to_string())
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let setup = ChildSetup {
            cgroup_procs: cgroup.as_ref().map(|c| c.procs_paths()).unwrap_or_default(),
            rlimits: c.rlimits,
            drop_to: c.drop_to,
            // bwrap sets no-new-privs itself (and must not be hindered if
            // setuid); death with the server while waiting, and bwrap's
            // --die-with-parent after.
            no_new_privs: false,
            pdeathsig: true,
            keep_fds: std::iter::once(rd.as_raw_fd())
                .chain(seccomp_fd)
                .chain(handshake.iter().flat_map(|h| h.child_fds()))
                .collect(),
        };
        // SAFETY: ChildSetup::apply only makes async-signal-safe system calls
        // on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }
        let mut child = cmd.spawn()?;
        // The child has its copies of the read end and the seccomp pipe.
        drop(rd);
        drop(seccomp);
        // Its network, before anyone can take it (this thread lives as long
        // as the server: pasta's pdeathsig is exact).
        let network = match (handshake, &c.pasta) {
            (Some(h), Some(pasta)) => {
                let (info, block) = h.parent_ends();
                let attached = crate::net::read_child_pid(info, crate::net::READY_TIMEOUT)
                    .and_then(|pid| crate::net::attach(pasta, pid))
                    .and_then(|p| crate::net::release(block).map(|()| p));
                match attached {
                    Ok(p) => Some(p),
                    Err(e) => {
                        let _ = child.start_kill();
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        Ok(Launcher {
            child: Some(child),
            args: Some(wr),
            seccomp_fd,
            cgroup: None,
            dir: None,
            key,
            name: OsString::from(&name),
            network,
        })
    })();
    match res {
        Ok(mut l) => {
            l.cgroup = cgroup;
            l.dir = dir;
            Ok(l)
        }
        Err(e) => {
            if let Some(cg) = cgroup {
                let _ = cg.kill_all(Vec::new());
                let _ = cg.remove();
            }
            if let Some(d) = dir {
                remove_launch_dir(&d);
            }
            Err(e)
        }
    }
}

/// A C string of a path.
fn cpath(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Bind `src` (recursively) onto `dst`, nosuid and nodev, read-only if
/// asked, with the flags set *before* the mount is attached (so the copies
/// propagated into a sandbox carry them too): `open_tree` +
/// `mount_setattr` + `move_mount` (Linux >= 5.12).
pub(crate) fn bind_into(src: &Path, dst: &Path, readonly: bool) -> io::Result<()> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let s = cpath(src)?;
    let d = cpath(dst)?;
    // SAFETY: raw system calls on NUL-terminated strings and a local struct
    // that outlive them; the returned fd is owned right away.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            s.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd as RawFd);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_NOSUID
                | MOUNT_ATTR_NODEV
                | if readonly { MOUNT_ATTR_RDONLY } else { 0 },
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        if libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Detach whatever is mounted on `p` (all layers); errors ignored.
fn unmount_all(p: &Path) {
    let Ok(c) = cpath(p) else {
        return;
    };
    for _ in 0..8 {
        // SAFETY: umount2 on a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } < 0 {
            break;
        }
    }
}

/// Unmount and remove a launcher's mount directory.
pub(crate) fn remove_launch_dir(d: &Path) {
    for sub in ["function", "iofs"] {
        unmount_all(&d.join(sub));
        let _ = std::fs::remove_dir(d.join(sub));
    }
    let _ = std::fs::remove_dir(d);
}

/// The shared mount under which prebuilt sandboxes get their directories:
/// a small tmpfs on `<run dir>/fnrs-pool/<cgroup parent>`, made shared.
/// Whatever an earlier server left there is removed first.
pub(crate) fn setup_root(parent: &str) -> io::Result<PathBuf> {
    let root = root_path(parent);
    cleanup_root(&root);
    std::fs::create_dir_all(&root)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    let c = cpath(&root)?;
    // SAFETY: mount(2) on NUL-terminated paths.
    unsafe {
        // A tmpfs, not a bind of the host's directory: the sandboxes'
        // mountinfo then shows `/pool-…/iofs`, not the host path with the
        // server id. Only directories live there.
        if libc::mount(
            c"fnrs-pool".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755,size=64k".as_ptr().cast(),
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        // A peer group of its own: the instances' mounts propagate to the
        // sandboxes only, not to whatever shares the enclosing mount.
        if libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_PRIVATE,
            std::ptr::null(),
        ) < 0
            || libc::mount(
                std::ptr::null(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED,
                std::ptr::null(),
            ) < 0
        {
            let e = io::Error::last_os_error();
            unmount_all(&root);
            return Err(e);
        }
    }
    Ok(root)
}

/// Where [`setup_root`] puts a parent's directories.
pub(crate) fn root_path(parent: &str) -> PathBuf {
    let base = if Path::new("/run").is_dir() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    };
    base.join("fnrs-pool")
        .join(parent.trim_matches('/').replace('/', "%"))
}

/// Remove the launcher directories under a root and the root itself.
pub(crate) fn cleanup_root(root: &Path) {
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            remove_launch_dir(&e.path());
        }
    }
    unmount_all(root);
    let _ = std::fs::remove_dir(root);
}

/// Remove the launcher directories under a root but those named in `keep`.
pub(crate) fn cleanup_dirs(root: &Path, keep: &[OsString]) {
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            if !keep.contains(&e.file_name()) {
                remove_launch_dir(&e.path());
            }
        }
    }
}
