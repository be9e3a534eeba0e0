//! The private network of a sandbox ([`crate::ENV_NETWORK`]=`private`): the
//! sandbox's own network namespace (bwrap makes it) served by `pasta`
//! (Debian's `passt`), a user-mode network stack attached from outside.
//!
//! The server opens `/proc/<sandbox pid>/ns/net` and hands the descriptor to
//! pasta (`--netns /proc/self/fd/N`): the sandbox runs as another uid, and
//! joining its user namespace is refused. pasta runs as root without
//! capabilities in the host's namespaces (`--runas 0`; it confines itself
//! with its own namespaces and seccomp), with no port forwarded either way
//! (`-t/-u/-T/-U none`: the host's loopback, and so the server, is not
//! mapped into the sandbox) and the gateway not mapped to the host
//! (`--no-map-gw`). It stays in the foreground (`-f`), a child of the
//! server forked from a thread that lives as long as the server, so it dies
//! with the server (pdeathsig) and is killed with its sandbox ([`Pasta`]'s
//! drop). It writes its pid file once the namespace's interface is
//! configured: that file is a pipe, and its first line is the readiness
//! signal.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::spawn::{ChildSetup, Rlimits};

/// How long a sandbox's network may take to come up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to look for pasta unless configured.
pub(crate) fn find_pasta(configured: Option<&Path>) -> Option<PathBuf> {
    crate::spawn::find_program(
        configured,
        &["/usr/bin/pasta", "/usr/local/bin/pasta", "/bin/pasta"],
    )
}

/// A pasta process serving one sandbox; killed (and reaped) when dropped.
pub(crate) struct Pasta {
    child: Child,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Pasta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pasta")
            .field("pid", &self.child.id())
            .finish()
    }
}

/// A pasta started for a namespace, not yet known to be ready.
pub(crate) struct Starting {
    pasta: Pasta,
    /// Read end of the pid-file pipe.
    ready: OwnedFd,
}

/// Wait until `fd` is readable (or hung up), at most until `deadline`.
fn wait_readable(fd: &impl AsRawFd, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: poll on one pollfd owned by this frame.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(());
        }
    }
}

/// Read bwrap's `--info-fd` report up to its closing brace and return the
/// sandbox's `child-pid` (a pid in the server's namespace). Blocking.
pub(crate) fn read_child_pid(info: OwnedFd, timeout: Duration) -> io::Result<i32> {
    let deadline = Instant::now() + timeout;
    let mut f = std::fs::File::from(info);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'}') {
        wait_readable(&f, deadline)?;
        let n = f.read(&mut chunk)?;
        if n == 0 || buf.len() > 4096 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_child_pid(&buf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "bwrap did not report the sandbox's pid",
        )
    })
}

/// `"child-pid": N` from bwrap's JSON report.
fn parse_child_pid(buf: &[u8]) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_slice(buf).ok()?;
    let pid = v.get("child-pid")?.as_i64()?;
    i32::try_from(pid).ok().filter(|p| *p > 0)
}

/// Fork pasta for the network namespace of `pid`. Run it on a thread that
/// lives as long as the server (its pdeathsig is per thread).
pub(crate) fn spawn(pasta: &Path, pid: i32) -> io::Result<Starting> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let ns = OwnedFd::from(ns);
    let (ready, pid_file) = crate::spawn::pipe()?;
    let mut cmd = Command::new(pasta);
    cmd.arg("--netns")
        .arg(format!("/proc/self/fd/{}", ns.as_raw_fd()))
        .args(["--runas", "0", "--config-net", "--no-map-gw", "-q", "-f"])
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .arg("--pid")
        .arg(format!("/proc/self/fd/{}", pid_file.as_raw_fd()))
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let setup = ChildSetup {
        cgroup_procs: Vec::new(),
        rlimits: Rlimits::default(),
        drop_to: None,
        no_new_privs: false,
        pdeathsig: true,
        keep_fds: vec![ns.as_raw_fd(), pid_file.as_raw_fd()],
    };
    // SAFETY: ChildSetup::apply only makes async-signal-safe system calls
    // on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    let child = cmd.spawn()?;
    Ok(Starting {
        pasta: Pasta { child },
        ready,
    })
}

impl Starting {
    /// Wait for pasta's pid line (the namespace is configured). On error
    /// pasta is killed and the error carries what it said. Blocking.
    pub(crate) fn wait_ready(self, timeout: Duration) -> io::Result<Pasta> {
        let Starting { mut pasta, ready } = self;
        let deadline = Instant::now() + timeout;
        let mut f = std::fs::File::from(ready);
        let mut buf = [0u8; 32];
        let res = wait_readable(&f, deadline).and_then(|()| f.read(&mut buf));
        match res {
            Ok(n) if n > 0 => Ok(pasta),
            other => {
                let _ = pasta.child.kill();
                let _ = pasta.child.wait();
                let mut said = String::new();
                if let Some(mut e) = pasta.child.stderr.take() {
                    let _ = (&mut e).take(2048).read_to_string(&mut said);
                }
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "it exited".to_string(),
                };
                Err(io::Error::other(format!(
                    "pasta did not set up the network ({why}): {}",
                    said.trim()
                )))
            }
        }
    }
}

/// [`spawn`] then [`Starting::wait_ready`], on this thread.
pub(crate) fn attach(pasta: &Path, pid: i32) -> io::Result<Pasta> {
    spawn(pasta, pid)?.wait_ready(READY_TIMEOUT)
}

/// The pipes between the server and bwrap while a sandbox's network comes
/// up: bwrap reports the sandbox's pid on `--info-fd` and holds the
/// command back until `--block-fd` is readable.
pub(crate) struct Handshake {
    pub(crate) info_rd: OwnedFd,
    pub(crate) info_wr: OwnedFd,
    pub(crate) block_rd: OwnedFd,
    pub(crate) block_wr: OwnedFd,
}

impl Handshake {
    pub(crate) fn new() -> io::Result<Self> {
        let (info_rd, info_wr) = crate::spawn::pipe()?;
        let (block_rd, block_wr) = crate::spawn::pipe()?;
        Ok(Handshake {
            info_rd,
            info_wr,
            block_rd,
            block_wr,
        })
    }

    /// bwrap's options for the child's ends.
    pub(crate) fn bwrap_args(&self) -> [std::ffi::OsString; 4] {
        [
            "--info-fd".into(),
            self.info_wr.as_raw_fd().to_string().into(),
            "--block-fd".into(),
            self.block_rd.as_raw_fd().to_string().into(),
        ]
    }

    /// The descriptors bwrap must inherit.
    pub(crate) fn child_fds(&self) -> [std::os::fd::RawFd; 2] {
        [self.info_wr.as_raw_fd(), self.block_rd.as_raw_fd()]
    }

    /// After the fork: keep the server's ends only.
    pub(crate) fn parent_ends(self) -> (OwnedFd, OwnedFd) {
        (self.info_rd, self.block_wr)
    }
}

/// Let the sandbox's command run (its network is up). Blocking, but a
/// one-byte write to an empty pipe.
pub(crate) fn release(block_wr: OwnedFd) -> io::Result<()> {
    use std::io::Write;
    std::fs::File::from(block_wr).write_all(b"1")
}

/// Try a private network once at start: a sandbox (`-- true`) with pasta
/// attached. Blocking.
pub(crate) fn probe(
    bwrap: &Path,
    base_args: &[std::ffi::OsString],
    drop_to: Option<(u32, u32)>,
    pasta: &Path,
) -> io::Result<()> {
    let hs = Handshake::new()?;
    let mut cmd = Command::new(bwrap);
    cmd.args(base_args)
        .args(hs.bwrap_args())
        .args(["--", "/usr/bin/true"])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let setup = ChildSetup {
        cgroup_procs: Vec::new(),
        rlimits: Rlimits::default(),
        drop_to,
        no_new_privs: false,
        pdeathsig: true,
        keep_fds: hs.child_fds().to_vec(),
    };
    // SAFETY: ChildSetup::apply only makes async-signal-safe system calls
    // on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    let mut sandbox = cmd.spawn()?;
    let (info, block) = hs.parent_ends();
    let res = read_child_pid(info, READY_TIMEOUT)
        .and_then(|pid| attach(pasta, pid))
        .and_then(|p| release(block).map(|()| p));
    if res.is_err() {
        let _ = sandbox.kill();
    }
    let st = sandbox.wait()?;
    let mut said = String::new();
    if let Some(mut e) = sandbox.stderr.take() {
        let _ = (&mut e).take(2048).read_to_string(&mut said);
    }
    match res {
        Ok(p) if st.success() => {
            drop(p);
            Ok(())
        }
        Ok(_) => Err(io::Error::other(format!(
            "the probe sandbox failed ({st}): {}",
            said.trim()
        ))),
        Err(e) => Err(io::Error::other(format!("{e} (bwrap: {})", said.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bwraps_report() {
        let r = b"{\n    \"child-pid\": 4242,\n    \"cgroup-namespace\": 1\n}\n";
        assert_eq!(parse_child_pid(r), Some(4242));
        assert_eq!(parse_child_pid(b"{\"child-pid\": -1}"), None);
        assert_eq!(parse_child_pid(b"{\"child-pid\": \"x\"}"), None);
        assert_eq!(parse_child_pid(b"garbage"), None);
    }
}
