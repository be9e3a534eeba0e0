//! The iofs directories: one per http-stream instance, where the function
//! creates `lsnr.sock` (contract §2.2–2.3), and the server lock that tells
//! live servers from crashed ones.
//!
//! Every server holds an exclusive `flock` on `<lock dir>/<server id>.lock`
//! for its whole life; the lock dir is machine-wide (`/run/fnrs` by default),
//! because what servers leave behind (cgroups, containers) is too. Each server
//! owns `<FN_IOFS_PATH>/fnrs/<server id>/` (`/run/fnrs/iofs` by default as
//! root); at start, the directories of servers whose lock is free (they
//! crashed) are unmounted and removed, then their lock files.
//!
//! Functions write into their iofs directory, so nothing there is trusted:
//! `fnrs` and the server's directory must be real directories of the
//! server's user that nobody else can change, nothing is followed when
//! removing, and as root each instance's directory is a small tmpfs of its
//! own (`FN_IOFS_TMPFS`, `FN_IOFS_OPTS`) that bounds what it can write.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
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
        // Another server may remove the file as a dead server's between our
        // open and our lock: then lock a new one.
        for _ in 0..8 {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| io::Error::from(e))?;
            if still_linked(&lock, &path) {
                return Ok(Self { path, _lock: lock });
            }
        }
        Err(io::Error::other(format!(
            "{} keeps being removed",
            path.display()
        )))
    }
}

impl Drop for ServerLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `path` still names the file `f` has open.
fn still_linked(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The servers known to have stopped on this machine: their lock file in
/// `lock_dir` is free. Taken before their leftovers are cleaned, so that
/// only their locks are removed afterwards ([`remove_dead_locks`]).
pub fn dead_servers(lock_dir: &Path, me: &str) -> std::collections::BTreeSet<String> {
    let Ok(rd) = fs::read_dir(lock_dir) else {
        return Default::default();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".lock")?.to_string();
            (name != me && server_is_dead(lock_dir, &name)).then_some(name)
        })
        .collect()
}

/// Remove the lock files of `dead` servers (see [`dead_servers`]), each
/// while holding its lock; returns how many went.
pub fn remove_dead_locks(lock_dir: &Path, dead: &std::collections::BTreeSet<String>) -> usize {
    let mut n = 0;
    for id in dead {
        let path = lock_dir.join(format!("{id}.lock"));
        let Ok(f) = OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        if still_linked(&lock, &path) && fs::remove_file(&path).is_ok() {
            n += 1;
        }
    }
    n
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

/// Whether the server runs as root (then iofs directories are tmpfs by
/// default).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The default `FN_IOFS_PATH`: `/run/fnrs/iofs` for a root server (a place
/// only root may write to), else the temp dir.
pub fn default_iofs_base() -> PathBuf {
    if nix::unistd::geteuid().is_root() && Path::new("/run").is_dir() {
        PathBuf::from("/run/fnrs/iofs")
    } else {
        std::env::temp_dir()
    }
}

/// This server's iofs area.
#[derive(Debug)]
pub(crate) struct IofsRoot {
    dir: PathBuf,
    /// Mount options of the tmpfs mounted on each instance's directory
    /// (`None`: plain directories).
    tmpfs: Option<String>,
    /// Stopped servers whose directory could not be removed at start.
    stale_left: Vec<String>,
}

/// Flags of every iofs tmpfs: the function needs a socket there, nothing
/// to run.
fn tmpfs_flags() -> nix::mount::MsFlags {
    use nix::mount::MsFlags;
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// The source name of iofs tmpfs mounts (in mount listings).
const TMPFS_SOURCE: &str = "fnrs-iofs";

fn mount_tmpfs(dir: &Path, opts: &str) -> io::Result<()> {
    nix::mount::mount(
        Some(TMPFS_SOURCE),
        dir,
        Some("tmpfs"),
        tmpfs_flags(),
        Some(opts),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "mounting a tmpfs ({opts}) on {}: {e}",
            dir.display()
        ))
    })
}

/// Detach whatever is mounted on `dir` (stacked mounts too); never follows
/// a symlink. Not a mount point: nothing to do.
fn unmount(dir: &Path) {
    use nix::mount::MntFlags;
    for _ in 0..8 {
        if nix::mount::umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_err() {
            break;
        }
    }
}

/// Decode a mountinfo field (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Unmount every mount at or below `dir` in this mount namespace, deepest
/// first (a crashed server's instance tmpfs, say).
fn unmount_under(dir: &Path) {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        unmount(&p);
    }
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> io::Error {
    let me = nix::unistd::geteuid();
    let who = if me.is_root() {
        "root".to_string()
    } else {
        format!("root or uid {me}")
    };
    io::Error::other(format!(
        "refusing {}: {why}. fnrs creates, mounts over and removes directories there; \
         remove it, or set FN_IOFS_PATH to a directory that only {who} can write to",
        path.display()
    ))
}

/// Every directory from `/` down to `dir` (canonical) is owned by root or
/// us and, unless sticky, not writable by others: nobody else can swap
/// what fnrs makes below it for a symlink.
fn check_ancestors(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    for anc in chain {
        let md = fs::symlink_metadata(anc)?;
        if md.uid() != 0 && md.uid() != me {
            return Err(refuse(anc, format_args!("it is owned by uid {}", md.uid())));
        }
        if md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0 {
            return Err(refuse(
                anc,
                format_args!(
                    "it is writable by other users (mode {:o}, no sticky bit)",
                    md.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Make `dir` (never through a symlink; it must be new if `fresh`), then
/// check what is there: a real directory, ours, not writable by others.
/// Leaves it mode 0755.
fn own_dir(dir: &Path, fresh: bool) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !fresh => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
    match fs::symlink_metadata(dir) {
        Ok(md) if md.file_type().is_symlink() => {
            return Err(refuse(dir, "it is a symbolic link"));
        }
        Ok(md) if !md.is_dir() => return Err(refuse(dir, "it is not a directory")),
        _ => {}
    }
    // The checks below are on what this opens, whatever happens meanwhile.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(dir)
        .map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ELOOP) => refuse(dir, "it is a symbolic link"),
            Some(Errno::ENOTDIR) => refuse(dir, "it is not a directory"),
            _ => io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
        })?;
    let md = f.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me {
        return Err(refuse(dir, format_args!("it is owned by uid {}", md.uid())));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refuse(
            dir,
            format_args!(
                "it is writable by group or others (mode {:o})",
                md.mode() & 0o7777
            ),
        ));
    }
    // The umask may have narrowed it; the unsandboxed function's uid must
    // pass through.
    f.set_permissions(fs::Permissions::from_mode(0o755))
}

impl IofsRoot {
    /// Claim `<base>/fnrs/<server_id>` and remove what crashed servers left
    /// (the caller holds this server's lock in `lock_dir`). The base and
    /// its ancestors must be safe from other users ([`check_ancestors`]),
    /// `fnrs` and the server's directory real directories of ours.
    ///
    /// With `tmpfs` (mount options), each instance's directory is a tmpfs
    /// of its own; when that cannot be mounted, start fails if `required`,
    /// else plain directories are used, with a warning.
    pub(crate) fn create(
        base: &Path,
        server_id: &str,
        lock_dir: &Path,
        tmpfs: Option<&str>,
        required: bool,
    ) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(base)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", base.display())))?;
        let base = fs::canonicalize(base)?;
        check_ancestors(&base)?;
        let parent = base.join("fnrs");
        own_dir(&parent, false)?;
        let stale_left = remove_stale(&parent, server_id, lock_dir);
        let dir = parent.join(server_id);
        own_dir(&dir, true)?;
        let tmpfs = match tmpfs {
            None => None,
            Some(opts) => match probe_tmpfs(&dir, opts) {
                Ok(()) => Some(opts.to_string()),
                Err(e) if required => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(io::Error::other(format!(
                        "{e} (FN_IOFS_TMPFS=true needs root, or CAP_SYS_ADMIN)"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "iofs directories are NOT size-bounded: functions can fill the disk under FN_IOFS_PATH (set FN_IOFS_TMPFS=false to silence this)");
                    None
                }
            },
        };
        Ok(Self {
            dir,
            tmpfs,
            stale_left,
        })
    }

    /// The servers whose stale iofs directory could not be removed.
    pub(crate) fn stale_left(&self) -> &[String] {
        &self.stale_left
    }

    /// The tmpfs options in use, if any (for `/health`).
    pub(crate) fn tmpfs(&self) -> Option<&str> {
        self.tmpfs.as_deref()
    }

    /// Makes a fresh, empty, world-writable directory for one instance (the
    /// function runs as an unprivileged user and must create its socket),
    /// a tmpfs of its own when configured. Blocking: run it off the async
    /// workers.
    pub(crate) fn instance_dir_job(
        &self,
        instance_id: &str,
    ) -> impl FnOnce() -> io::Result<PathBuf> + Send + 'static {
        let dir = self.dir.join(instance_id);
        let tmpfs = self.tmpfs.clone();
        move || {
            fs::DirBuilder::new().mode(0o777).create(&dir)?;
            let made =
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).and_then(|()| {
                    match &tmpfs {
                        Some(opts) => mount_tmpfs(&dir, opts),
                        None => Ok(()),
                    }
                });
            if let Err(e) = made {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
            Ok(dir)
        }
    }

    /// Remove everything of this server (at shutdown). Blocking.
    pub(crate) fn remove_all_job(&self) -> impl FnOnce() + Send + 'static {
        let dir = self.dir.clone();
        move || {
            unmount_under(&dir);
            if let Err(e) = fs::remove_dir_all(&dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "removing iofs root failed");
            }
        }
    }
}

/// Mount and unmount a tmpfs with `opts` once, in `<dir>/.probe`.
fn probe_tmpfs(dir: &Path, opts: &str) -> io::Result<()> {
    let probe = dir.join(".probe");
    fs::create_dir(&probe)?;
    let r = mount_tmpfs(&probe, opts);
    unmount(&probe);
    let _ = fs::remove_dir(&probe);
    r
}

/// Remove the iofs dirs of servers that are not running any more. `parent`
/// was checked by [`own_dir`]: only this user writes there. Nothing is
/// followed: an entry that is a symlink is removed itself, and
/// `remove_dir_all` does not follow links inside.
fn remove_stale(parent: &Path, me: &str, lock_dir: &Path) -> Vec<String> {
    let mut failed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return failed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name == me || server_is_live(lock_dir, &name) {
            continue;
        }
        tracing::info!(dir = %path.display(), "removing iofs dirs left by a stopped server");
        let r = match entry.file_type() {
            Ok(t) if t.is_dir() => {
                // Its instances' tmpfs mounts first (not removable, and
                // nothing of the function's to walk through).
                unmount_under(&path);
                fs::remove_dir_all(&path)
            }
            _ => fs::remove_file(&path),
        };
        if let Err(e) = r {
            tracing::warn!(dir = %path.display(), error = %e, "removing a stopped server's iofs dir failed");
            failed.push(name);
        }
    }
    failed
}

/// Remove one instance's directory: unmount its tmpfs (its content goes
/// unread), then remove what is left. Blocking.
pub(crate) fn remove_dir(dir: &Path) {
    unmount(dir);
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing iofs dir failed");
    }
}

/// Removes an instance's iofs directory (and its tmpfs) when dropped unless
/// disarmed: a start whose future is dropped mid-way leaves none behind.
pub(crate) struct DirGuard(pub(crate) Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn_blocking(move || remove_dir(&d));
                }
                Err(_) => remove_dir(&d),
            }
        }
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
        let live = IofsRoot::create(base.path(), "LIVE", locks.path(), None, false).unwrap();
        let d = live.instance_dir_job("I1")().unwrap();
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
        let other = IofsRoot::create(base.path(), "OTHER", locks.path(), None, false).unwrap();
        assert!(!stale.exists());
        assert!(d.exists(), "a live server's dirs must survive");
        live.remove_all_job()();
        other.remove_all_job()();
        assert!(!base.path().join("fnrs/LIVE").exists());
    }

    #[test]
    fn a_planted_link_or_foreign_dir_is_refused_untouched() {
        let base = tempfile::tempdir().unwrap();
        let locks = tempfile::tempdir().unwrap();
        let canary = tempfile::tempdir().unwrap();
        fs::write(canary.path().join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(canary.path(), base.path().join("fnrs")).unwrap();
        let _l = ServerLock::acquire(locks.path(), "ME").unwrap();
        let e = IofsRoot::create(base.path(), "ME", locks.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(canary.path().join("keep").exists());
        assert!(!canary.path().join("ME").exists());
        // A file there, or a directory others may write to.
        fs::remove_file(base.path().join("fnrs")).unwrap();
        fs::write(base.path().join("fnrs"), "").unwrap();
        let e = IofsRoot::create(base.path(), "ME", locks.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        fs::remove_file(base.path().join("fnrs")).unwrap();
        fs::create_dir(base.path().join("fnrs")).unwrap();
        fs::set_permissions(base.path().join("fnrs"), fs::Permissions::from_mode(0o777)).unwrap();
        let e = IofsRoot::create(base.path(), "ME", locks.path(), None, false).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
    }

    #[test]
    fn the_default_base_of_root_is_root_only() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        assert_eq!(default_iofs_base(), Path::new("/run/fnrs/iofs"));
        // The real lock dir: other servers' areas there are judged rightly.
        let locks = default_lock_dir();
        let id = format!("TEST{}", std::process::id());
        let _l = ServerLock::acquire(&locks, &id).unwrap();
        let root = IofsRoot::create(&default_iofs_base(), &id, &locks, None, false).unwrap();
        assert!(Path::new("/run/fnrs/iofs/fnrs").join(&id).is_dir());
        root.remove_all_job()();
    }

    fn mounted(p: &Path) -> bool {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| unescape_mountinfo(m) == p)
    }

    #[test]
    fn instance_dirs_are_bounded_tmpfs_unmounted_on_every_path() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let locks = tempfile::tempdir().unwrap();
        let opts = Some("size=64k,nr_inodes=16,mode=0777");
        let dead_lock = ServerLock::acquire(locks.path(), "DEAD").unwrap();
        let dead = IofsRoot::create(base.path(), "DEAD", locks.path(), opts, true).unwrap();
        assert_eq!(dead.tmpfs(), opts);
        let d = dead.instance_dir_job("I1")().unwrap();
        assert!(mounted(&d));
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o777
        );
        let big = vec![0u8; 1 << 20];
        let e = fs::write(d.join("big"), &big).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::ENOSPC as i32), "{e}");
        // An instance's end unmounts it (the content is not walked).
        std::os::unix::fs::symlink("/", d.join("link")).unwrap();
        remove_dir(&d);
        assert!(!mounted(&d) && !d.exists());
        // A crashed server's mounts: gone at the next server's start.
        let d2 = dead.instance_dir_job("I2")().unwrap();
        drop(dead_lock);
        let me_lock = ServerLock::acquire(locks.path(), "ME").unwrap();
        let me = IofsRoot::create(base.path(), "ME", locks.path(), opts, true).unwrap();
        assert!(!mounted(&d2), "the dead server's tmpfs is unmounted");
        assert!(!base.path().join("fnrs/DEAD").exists());
        // Shutdown unmounts what is left.
        let d3 = me.instance_dir_job("I3")().unwrap();
        me.remove_all_job()();
        assert!(!mounted(&d3) && !base.path().join("fnrs/ME").exists());
        drop(me_lock);
        // Options the kernel refuses: an error when required, else none.
        let _l = ServerLock::acquire(locks.path(), "BAD").unwrap();
        let e = IofsRoot::create(base.path(), "BAD", locks.path(), Some("nonsense=1"), true)
            .unwrap_err();
        assert!(e.to_string().contains("FN_IOFS_TMPFS"), "{e}");
        let r =
            IofsRoot::create(base.path(), "BAD", locks.path(), Some("nonsense=1"), false).unwrap();
        assert_eq!(r.tmpfs(), None);
        r.remove_all_job()();
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b\011c\134d\9x\04"),
            PathBuf::from("/a b\tc\\d\\9x\\04")
        );
    }

    #[test]
    fn only_the_locks_of_servers_dead_before_are_removed() {
        let locks = tempfile::tempdir().unwrap();
        let me = ServerLock::acquire(locks.path(), "ME").unwrap();
        let live = ServerLock::acquire(locks.path(), "LIVE").unwrap();
        File::create(locks.path().join("DEAD.lock")).unwrap();
        fs::write(locks.path().join("other.txt"), "").unwrap();
        let dead = dead_servers(locks.path(), "ME");
        assert_eq!(dead.iter().collect::<Vec<_>>(), ["DEAD"]);
        // LIVE stops meanwhile: not judged yet, its lock stays.
        drop(live);
        File::create(locks.path().join("LIVE.lock")).unwrap();
        assert_eq!(remove_dead_locks(locks.path(), &dead), 1);
        assert!(!locks.path().join("DEAD.lock").exists());
        assert!(locks.path().join("LIVE.lock").exists());
        assert!(locks.path().join("ME.lock").exists());
        assert!(server_is_live(locks.path(), "ME"));
        // A lock held is never removed, even if named.
        let all = ["ME".to_string()].into_iter().collect();
        assert_eq!(remove_dead_locks(locks.path(), &all), 0);
        drop(me);
        assert!(
            !locks.path().join("ME.lock").exists(),
            "removed at a clean stop"
        );
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
