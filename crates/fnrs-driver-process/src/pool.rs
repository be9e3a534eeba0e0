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
use std::path::PathBuf;
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

/// How long after a take the pool waits before forking a replacement.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// How long the pool waits after failing to make a launcher.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// Where to find bash.
pub(crate) fn find_bash() -> Option<PathBuf> {
    ["/usr/bin/bash", "/bin/bash", "/usr/local/bin/bash"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A waiting launcher. Dropping it kills it and removes its cgroup (on the
/// dropping thread: see [`discard`]).
pub(crate) struct Launcher {
    /// The bash process (`None` once handed over).
    child: Option<tokio::process::Child>,
    /// Write end of the argument pipe (`None` once launched).
    args: Option<OwnedFd>,
    /// The seccomp program's fd number in the launcher, for `--seccomp`.
    pub(crate) seccomp_fd: Option<RawFd>,
    /// Its cgroup (None without cgroups, or once handed over).
    cgroup: Option<InstanceCgroup>,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill_all(Vec::new());
            let _ = cg.remove();
        }
    }
}

impl Launcher {
    /// Its cgroup.
    pub(crate) fn cgroup_mut(&mut self) -> Option<&mut InstanceCgroup> {
        self.cgroup.as_mut()
    }

    /// The process and the cgroup, now the instance's.
    pub(crate) fn into_parts(mut self) -> (tokio::process::Child, Option<InstanceCgroup>) {
        let child = self
            .child
            .take()
            .expect("a launcher has its process until handed over");
        (child, self.cgroup.take())
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
fn discard_now(l: Launcher) {
    drop(l);
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
}

struct Inner {
    config: LauncherConfig,
    target: usize,
    idle: Mutex<Vec<Launcher>>,
    wake: Notify,
    started: AtomicBool,
    shutdown: AtomicBool,
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
        Pool {
            inner: Arc::new(Inner {
                config,
                target,
                idle: Mutex::new(Vec::new()),
                wake: Notify::new(),
                started: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
                making: Mutex::new(()),
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

    /// A live launcher, if one is waiting. Wakes the filler.
    pub(crate) fn take(&self) -> Option<Launcher> {
        self.start_filling();
        let mut dead = Vec::new();
        let found = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(mut l) = idle.pop() {
                if l.alive() {
                    found = Some(l);
                    break;
                }
                dead.push(l);
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

    /// Names of the cgroups of the waiting launchers (kept by the leftover
    /// cleanup).
    pub(crate) fn cgroup_names(&self) -> Vec<OsString> {
        let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter()
            .filter_map(|l| l.cgroup.as_ref())
            .filter_map(|c| c.dirs().first().and_then(|d| d.file_name()))
            .map(|n| n.to_owned())
            .collect()
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
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        // A launcher being made is discarded by its maker once done.
        drop(self.inner.making.lock().unwrap_or_else(|e| e.into_inner()));
        let idle: Vec<Launcher> =
            std::mem::take(&mut *self.inner.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for l in idle {
            discard_now(l);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps the pool full until shutdown.
async fn fill(inner: Arc<Inner>) {
    loop {
        if inner.shutdown.load(Ordering::Acquire) {
            return;
        }
        let n = inner.idle.lock().unwrap_or_else(|e| e.into_inner()).len();
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
        let made = spawn::on_pool_thread(move || make_launcher(&i)).await;
        match made {
            Some(Ok(l)) => {
                let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                // Checked under the lock shutdown drains with.
                if inner.shutdown.load(Ordering::Acquire) {
                    drop(idle);
                    discard(l);
                    return;
                }
                idle.push(l);
            }
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

/// A new pipe, both ends close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Fork one launcher (blocking: the cgroup join waits in the child, and the
/// fork returns once the child has exec'd bash). Run on the pool thread.
fn make_launcher(inner: &Inner) -> io::Result<Launcher> {
    let _making = inner.making.lock().unwrap_or_else(|e| e.into_inner());
    let stopped = || io::Error::other("the pool is shut down");
    if inner.shutdown.load(Ordering::Acquire) {
        return Err(stopped());
    }
    let l = make_launcher_inner(inner)?;
    if inner.shutdown.load(Ordering::Acquire) {
        drop(l);
        return Err(stopped());
    }
    Ok(l)
}

fn make_launcher_inner(inner: &Inner) -> io::Result<Launcher> {
    let c = &inner.config;
    let n = inner.seq.fetch_add(1, Ordering::Relaxed);
    let name = format!("pool-{}-{n}", std::process::id());
    let cgroup = match &c.cgroups {
        Some(cgs) => Some(cgs.create(&name, 0, c.max_pids)?),
        None => None,
    };
    let res = (|| {
        let (rd, wr) = pipe()?;
        let seccomp = match &c.seccomp {
            Some(p) => Some(crate::seccomp::program_fd(p)?),
            None => None,
        };
        let seccomp_fd = seccomp.as_ref().map(|f| f.as_raw_fd());
        let mut cmd = tokio::process::Command::new(&c.bash);
        cmd.args(["--norc", "--noprofile", "-c", SCRIPT, "fnrs-launcher"])
            .arg(rd.as_raw_fd().to_string())
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
            keep_fds: std::iter::once(rd.as_raw_fd()).chain(seccomp_fd).collect(),
        };
        // SAFETY: ChildSetup::apply only makes async-signal-safe system calls
        // on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }
        let child = cmd.spawn()?;
        // The child has its copies of the read end and the seccomp pipe.
        drop(rd);
        drop(seccomp);
        Ok(Launcher {
            child: Some(child),
            args: Some(wr),
            seccomp_fd,
            cgroup: None,
        })
    })();
    match res {
        Ok(mut l) => {
            l.cgroup = cgroup;
            Ok(l)
        }
        Err(e) => {
            if let Some(cg) = cgroup {
                let _ = cg.kill_all(Vec::new());
                let _ = cg.remove();
            }
            Err(e)
        }
    }
}
