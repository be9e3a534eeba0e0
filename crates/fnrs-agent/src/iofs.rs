//! The iofs directories: one per http-stream instance, where the function
//! creates `lsnr.sock` (spec §1.3.2–1.3.3).
//!
//! Every server owns `<FN_IOFS_PATH>/fnrs/<server id>/` and holds an exclusive
//! `flock` on `<server id>.lock` beside it for its whole life. At start, the
//! directories of servers whose lock is free (they crashed) are removed; live
//! servers sharing the same base are left alone.

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

/// This server's iofs area.
#[derive(Debug)]
pub(crate) struct IofsRoot {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl IofsRoot {
    /// Claim `<base>/fnrs/<server_id>` and remove what crashed servers left.
    pub(crate) fn create(base: &Path, server_id: &str) -> io::Result<Self> {
        let parent = base.join("fnrs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&parent)?;
        remove_stale(&parent);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(parent.join(format!("{server_id}.lock")))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io::Error::from(e))?;
        let dir = parent.join(server_id);
        fs::DirBuilder::new().mode(0o755).create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir, _lock: lock })
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
        let _ = fs::remove_file(self.dir.with_extension("lock"));
    }
}

/// Whether the server `server_id` that used `iofs_base` is running (holds its
/// lock). Other per-server leftovers (cgroups, containers) are judged by this.
pub fn server_is_live(iofs_base: &Path, server_id: &str) -> bool {
    let lock_path = iofs_base.join("fnrs").join(format!("{server_id}.lock"));
    match OpenOptions::new().write(true).open(lock_path) {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
        Err(_) => false,
    }
}

/// Remove the iofs dirs of servers that are not running any more.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lock") {
            continue;
        }
        let lock_path = path.with_extension("lock");
        let stale = match OpenOptions::new().write(true).open(&lock_path) {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(_) => true,
        };
        if stale {
            tracing::info!(dir = %path.display(), "removing iofs dirs left by a stopped server");
            let _ = fs::remove_dir_all(&path);
            let _ = fs::remove_file(&lock_path);
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
        let mut events = self
            .inotify
            .and_then(|i| i.into_event_stream([0u8; 1024]).ok());
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
                    match events.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if ev.is_none() {
                        events = None;
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
        let live = IofsRoot::create(base.path(), "LIVE").unwrap();
        let d = live.instance_dir("I1").unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o777
        );
        // A crashed server: its dir and an unlocked lock file.
        let stale = base.path().join("fnrs/DEAD");
        fs::create_dir_all(stale.join("I2")).unwrap();
        File::create(base.path().join("fnrs/DEAD.lock")).unwrap();
        assert!(server_is_live(base.path(), "LIVE"));
        assert!(!server_is_live(base.path(), "DEAD"));
        let other = IofsRoot::create(base.path(), "OTHER").unwrap();
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
