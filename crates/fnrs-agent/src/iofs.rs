//! The iofs directories: one per http-stream instance, where the function
//! creates `lsnr.sock` (spec §1.3.2–1.3.3), and the server lock that tells
//! live servers from crashed ones.
//!
//! Every server holds an exclusive `flock` on `<lock dir>/<server id>.lock`
//! for its whole life; the lock dir is machine-wide (`/run/fnrs` by default),
//! because what servers leave behind (cgroups, containers) is too. Each server
//! owns `<FN_IOFS_PATH>/fnrs/<server id>/`; at start, the directories of
//! servers whose lock is free (they crashed) are removed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use nix::fcntl::{Flock, FlockArg};
use tokio::time::Instant;

/// The socket file name the function must create.
pub(crate) const SOCKET_NAME: &str = "lsnr.sock";

/// The machine-wide directory of server locks: `/run/fnrs` when it can be
/// made, else `<temp dir>/fnrs-run`.
pub fn default_lock_dir() -> PathBuf {
    let run = Path::new("/run/fnrs");
    if fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run)
        .is_ok()
    {
        run.to_path_buf()
    } else {
        std::env::temp_dir().join("fnrs-run")
    }
}

/// Held by a running server: its lock file, locked.
#[derive(Debug)]
pub struct ServerLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl ServerLock {
    /// Lock `<dir>/<server_id>.lock` (fails if another process holds it).
    pub fn acquire(dir: &Path, server_id: &str) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        let path = dir.join(format!("{server_id}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io::Error::from(e))?;
        Ok(Self { path, _lock: lock })
    }
}

impl Drop for ServerLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether the server `server_id` is running (holds its lock in `lock_dir`).
/// Per-server leftovers (iofs dirs, cgroups, containers) are judged by this.
pub fn server_is_live(lock_dir: &Path, server_id: &str) -> bool {
    match OpenOptions::new()
        .write(true)
        .open(lock_dir.join(format!("{server_id}.lock")))
    {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
        Err(_) => false,
    }
}

/// Whether `server_id` is known to have stopped: its lock file is in
/// `lock_dir` but nobody holds it. Unlike `!server_is_live`, an id this
/// machine has never seen (another host's server on a shared Docker engine)
/// does not count as dead.
pub fn server_is_dead(lock_dir: &Path, server_id: &str) -> bool {
    if server_id.is_empty() {
        return false;
    }
    match OpenOptions::new()
        .write(true)
        .open(lock_dir.join(format!("{server_id}.lock")))
    {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
        Err(_) => false,
    }
}

/// This server's iofs area.
#[derive(Debug)]
pub(crate) struct IofsRoot {
    dir: PathBuf,
}

impl IofsRoot {
    /// Claim `<base>/fnrs/<server_id>` and remove what crashed servers left
    /// (the caller holds this server's lock in `lock_dir`).
    pub(crate) fn create(base: &Path, server_id: &str, lock_dir: &Path) -> io::Result<Self> {
        let parent = base.join("fnrs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&parent)?;
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755))?;
        remove_stale(&parent, server_id, lock_dir);
        let dir = parent.join(server_id);
        fs::DirBuilder::new().mode(0o755).create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir })
    }

    /// A fresh, empty, world-writable directory for one instance (the
    /// function runs as an unprivileged user and must create its socket).
    pub(crate) fn instance_dir(&self, instance_id: &str) -> io::Result<PathBuf> {
        let dir = self.dir.join(instance_id);
        fs::create_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
        Ok(dir)
    }

    /// Remove everything of this server (at shutdown).
    pub(crate) fn remove_all(&self) {
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing iofs root failed");
        }
    }
}

/// Remove the iofs dirs of servers that are not running any more.
fn remove_stale(parent: &Path, me: &str, lock_dir: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == me || server_is_live(lock_dir, &name) {
            continue;
        }
        tracing::info!(dir = %path.display(), "removing iofs dirs left by a stopped server");
        if path.is_dir() {
            let _ = fs::remove_dir_all(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Remove one instance's directory.
pub(crate) fn remove_dir(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing iofs dir failed");
    }
}

/// Drops its value on a blocking thread: closing an inotify fd waits for an
/// SRCU grace period (≈ 10–20 ms measured), which must not delay the call.
struct CloseInBackground<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Drop for CloseInBackground<T> {
    fn drop(&mut self) {
        if let Some(v) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || drop(v));
                }
                Err(_) => drop(v),
            }
        }
    }
}

/// Watches one iofs dir for `lsnr.sock`; created before the instance starts so
/// that no event is missed.
pub(crate) struct SocketWatch {
    dir: PathBuf,
    inotify: Option<Inotify>,
}

/// Why an instance never became ready.
#[derive(Debug)]
pub(crate) enum NotReady {
    TimedOut,
    Exited,
}

impl SocketWatch {
    pub(crate) fn new(dir: &Path) -> Self {
        // inotify is a fast path; polling covers filesystems where it is silent.
        let inotify = Inotify::init().ok().and_then(|i| {
            i.watches()
                .add(dir, WatchMask::CREATE | WatchMask::MOVED_TO)
                .ok()
                .map(|_| i)
        });
        Self {
            dir: dir.to_path_buf(),
            inotify,
        }
    }

    /// Wait until `lsnr.sock` exists (a symlink or a socket), the instance
    /// exits, or the deadline passes.
    pub(crate) async fn wait(
        self,
        deadline: Instant,
        exited: impl std::future::Future<Output = ()>,
    ) -> Result<(), NotReady> {
        let path = self.dir.join(SOCKET_NAME);
        let mut events = CloseInBackground(
            self.inotify
                .and_then(|i| i.into_event_stream([0u8; 1024]).ok()),
        );
        tokio::pin!(exited);
        let mut poll = tokio::time::interval(Duration::from_millis(25));
        loop {
            if fs::symlink_metadata(&path).is_ok() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = &mut exited => {
                    // It may have created the socket right before exiting;
                    // either way it cannot serve.
                    return Err(NotReady::Exited);
                }
                _ = tokio::time::sleep_until(deadline) => return Err(NotReady::TimedOut),
                ev = async {
                    match events.0.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if ev.is_none() {
                        // (Closed off the call path too.)
                        drop(CloseInBackground(events.0.take()));
                    }
                }
                _ = poll.tick() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_roots_are_removed_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let locks = tempfile::tempdir().unwrap();
        let _live_lock = ServerLock::acquire(locks.path(), "LIVE").unwrap();
        assert!(
            ServerLock::acquire(locks.path(), "LIVE").is_err(),
            "held once"
        );
        let live = IofsRoot::create(base.path(), "LIVE", locks.path()).unwrap();
        let d = live.instance_dir("I1").unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o777
        );
        // A crashed server: its dir, and a lock file nobody holds.
        let stale = base.path().join("fnrs/DEAD");
        fs::create_dir_all(stale.join("I2")).unwrap();
        File::create(locks.path().join("DEAD.lock")).unwrap();
        assert!(server_is_live(locks.path(), "LIVE"));
        assert!(!server_is_live(locks.path(), "DEAD"));
        assert!(!server_is_live(locks.path(), "NEVER"));
        assert!(server_is_dead(locks.path(), "DEAD"));
        assert!(!server_is_dead(locks.path(), "LIVE"));
        assert!(
            !server_is_dead(locks.path(), "NEVER"),
            "unknown is not dead"
        );
        let _other_lock = ServerLock::acquire(locks.path(), "OTHER").unwrap();
        let other = IofsRoot::create(base.path(), "OTHER", locks.path()).unwrap();
        assert!(!stale.exists());
        assert!(d.exists(), "a live server's dirs must survive");
        live.remove_all();
        other.remove_all();
        assert!(!base.path().join("fnrs/LIVE").exists());
    }

    #[tokio::test]
    async fn waits_for_socket_or_deadline_or_exit() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().to_path_buf();
        let watch = SocketWatch::new(&dir);
        let d2 = dir.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            std::os::unix::fs::symlink("phonylsnr.sock", d2.join(SOCKET_NAME)).unwrap();
        });
        let far = Instant::now() + Duration::from_secs(10);
        watch.wait(far, std::future::pending()).await.unwrap();

        let empty = tempfile::tempdir().unwrap();
        let r = SocketWatch::new(empty.path())
            .wait(
                Instant::now() + Duration::from_millis(50),
                std::future::pending(),
            )
            .await;
        assert!(matches!(r, Err(NotReady::TimedOut)));
        let r = SocketWatch::new(empty.path()).wait(far, async {}).await;
        assert!(matches!(r, Err(NotReady::Exited)));
    }
}
