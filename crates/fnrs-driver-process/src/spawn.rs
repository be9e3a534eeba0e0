//! Spawning: what the child does between fork and exec, and the one thread
//! every instance is forked from.
//!
//! Why one thread: `PR_SET_PDEATHSIG` (bwrap's `--die-with-parent`, and ours
//! in unsandboxed mode) fires when the *thread* that forked the child exits,
//! not the process. Tokio's blocking-pool threads come and go, so a child
//! forked from one could be killed at a random moment. Forking from a
//! dedicated thread that lives as long as the server makes "dies with the
//! server" exact.

use std::ffi::CString;
use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

/// Resource limits (`setrlimit`, soft = hard) applied in the child.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rlimits {
    /// `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
    /// `RLIMIT_MEMLOCK` in bytes.
    pub memlock: Option<u64>,
    /// `RLIMIT_SIGPENDING`.
    pub sigpending: Option<u64>,
    /// `RLIMIT_MSGQUEUE` in bytes.
    pub msgqueue: Option<u64>,
}

/// Everything the child does after fork and before exec. Built before the
/// fork; [`ChildSetup::apply`] only makes raw system calls (async-signal-safe,
/// no allocation), as required between fork and exec in a threaded process.
pub(crate) struct ChildSetup {
    /// `cgroup.procs` files to write the child's pid into (joins the cgroup
    /// before any of its code runs).
    pub(crate) cgroup_procs: Vec<CString>,
    pub(crate) rlimits: Rlimits,
    /// Switch to this uid/gid with no supplementary groups.
    pub(crate) drop_to: Option<(u32, u32)>,
    /// Set `PR_SET_NO_NEW_PRIVS`.
    pub(crate) no_new_privs: bool,
    /// Set `PR_SET_PDEATHSIG` = SIGKILL (after the uid switch, which clears it).
    pub(crate) pdeathsig: bool,
    /// Fds (close-on-exec in the parent) to pass on through exec.
    pub(crate) keep_fds: Vec<std::os::fd::RawFd>,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSetup {
    /// Run in the child between fork and exec.
    pub(crate) fn apply(&self) -> io::Result<()> {
        // SAFETY: only raw system calls on memory owned by `self` (built
        // before the fork) or on the stack.
        unsafe {
            // Only stdio and `keep_fds` go through exec: whatever else the
            // server holds without close-on-exec (e.g. a descriptor of the
            // shell that started it) must not reach a function. First, while
            // RLIMIT_NOFILE is still the server's.
            cloexec_from(3);
            if !self.cgroup_procs.is_empty() {
                let mut buf = [0u8; 24];
                let n = format_pid(libc::getpid(), &mut buf);
                for path in &self.cgroup_procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    check(fd)?;
                    let w = libc::write(fd, buf.as_ptr().cast(), n);
                    let err = (w < 0).then(io::Error::last_os_error);
                    libc::close(fd);
                    if let Some(e) = err {
                        return Err(e);
                    }
                }
            }
            let limits = [
                (libc::RLIMIT_NOFILE, self.rlimits.nofile),
                (libc::RLIMIT_MEMLOCK, self.rlimits.memlock),
                (libc::RLIMIT_SIGPENDING, self.rlimits.sigpending),
                (libc::RLIMIT_MSGQUEUE, self.rlimits.msgqueue),
            ];
            for (res, v) in limits {
                if let Some(v) = v {
                    let rl = libc::rlimit {
                        rlim_cur: v as libc::rlim_t,
                        rlim_max: v as libc::rlim_t,
                    };
                    check(libc::setrlimit(res, &rl))?;
                }
            }
            if let Some((uid, gid)) = self.drop_to {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(gid, gid, gid))?;
                check(libc::setresuid(uid, uid, uid))?;
            }
            if self.no_new_privs {
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            if self.pdeathsig {
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            }
            for &fd in &self.keep_fds {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
        }
        Ok(())
    }
}

/// The most descriptors [`cloexec_from`] walks one by one (kernels without
/// `close_range`, a limit of "unlimited").
const CLOEXEC_WALK_MAX: libc::rlim_t = 1 << 20;

/// Mark every descriptor >= `low` close-on-exec: `close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC` (Linux >= 5.11), else `fcntl` on each number below
/// the `RLIMIT_NOFILE` soft limit. Async-signal-safe, no allocation.
///
/// # Safety
/// Raw system calls only; call between fork and exec (or where no other
/// thread relies on descriptors staying inheritable).
pub(crate) unsafe fn cloexec_from(low: libc::c_uint) {
    // SAFETY: system calls on plain integers and a local struct.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            low,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        cloexec_walk(low);
    }
}

/// [`cloexec_from`] without `close_range`: `fcntl` on each number from `low`
/// below the `RLIMIT_NOFILE` soft limit (at most [`CLOEXEC_WALK_MAX`]).
///
/// # Safety
/// As [`cloexec_from`].
unsafe fn cloexec_walk(low: libc::c_uint) {
    // SAFETY: system calls on plain integers and a local struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur.min(CLOEXEC_WALK_MAX)
        } else {
            CLOEXEC_WALK_MAX
        };
        let mut fd = low as libc::rlim_t;
        while fd < max {
            let flags = libc::fcntl(fd as libc::c_int, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd as libc::c_int, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
            fd += 1;
        }
    }
}

/// Decimal digits of `pid` into `buf`; returns the length. No allocation.
fn format_pid(pid: libc::pid_t, buf: &mut [u8; 24]) -> usize {
    let mut v = pid.unsigned_abs() as u64;
    let mut tmp = [0u8; 24];
    let mut n = 0;
    loop {
        tmp[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = tmp[n - 1 - i];
    }
    n
}

/// A new pipe, both ends close-on-exec.
pub(crate) fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The configured program if it is a file, else the first candidate that is.
pub(crate) fn find_program(
    configured: Option<&std::path::Path>,
    candidates: &[&str],
) -> Option<std::path::PathBuf> {
    match configured {
        Some(p) => p.is_file().then(|| p.to_path_buf()),
        None => candidates
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file()),
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A dedicated thread that lives as long as the process and runs jobs
/// (forks) one at a time.
struct SpawnerThread {
    name: &'static str,
    tx: OnceLock<Option<mpsc::Sender<Job>>>,
}

impl SpawnerThread {
    const fn new(name: &'static str) -> Self {
        SpawnerThread {
            name,
            tx: OnceLock::new(),
        }
    }

    async fn run<T, F>(&'static self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        // Keep the thread alive whatever a job does.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .ok()
                .map(|_| tx)
        });
        let Some(tx) = tx else {
            return Some(f());
        };
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        let handle = tokio::runtime::Handle::current();
        let job: Job = Box::new(move || {
            let _guard = handle.enter();
            let _ = rtx.send(f());
        });
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            job();
        }
        rrx.await.ok()
    }
}

/// Forks instances started without a launcher from the pool.
static SPAWNER: SpawnerThread = SpawnerThread::new("fnrs-spawner");
/// Forks the pool's launchers (each fork waits ≈ 15 ms on a cgroup v1
/// migration: kept off the thread that serves cold starts).
static POOL_SPAWNER: SpawnerThread = SpawnerThread::new("fnrs-pool");

/// Run `f` on the spawner thread and return its result (`None` if it
/// panicked). Falls back to the calling thread if the spawner thread cannot
/// be created.
pub(crate) async fn on_spawner_thread<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    SPAWNER.run(f).await
}

/// [`on_spawner_thread`] for the launcher pool's thread.
pub(crate) async fn on_pool_thread<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    POOL_SPAWNER.run(f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inheritable_fd() -> std::fs::File {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: fcntl on a descriptor this test owns.
        unsafe {
            assert_eq!(libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0), 0);
        }
        f
    }

    fn cloexec(f: &std::fs::File) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this test owns.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn marks_descriptors_close_on_exec() {
        // Both ways: close_range and the walk of older kernels.
        let f = inheritable_fd();
        assert!(!cloexec(&f));
        // SAFETY: only flags of this test process's descriptors change.
        unsafe { cloexec_walk(3) };
        assert!(cloexec(&f));
        let f = inheritable_fd();
        // SAFETY: as above.
        unsafe { cloexec_from(3) };
        assert!(cloexec(&f));
    }

    #[test]
    fn formats_pids() {
        let mut b = [0u8; 24];
        let n = format_pid(0, &mut b);
        assert_eq!(&b[..n], b"0");
        let n = format_pid(4194304, &mut b);
        assert_eq!(&b[..n], b"4194304");
        let n = format_pid(i32::MAX, &mut b);
        assert_eq!(&b[..n], i32::MAX.to_string().as_bytes());
    }
}
