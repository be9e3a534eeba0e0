//! The process driver: functions as local processes in a bubblewrap sandbox
//! with cgroup v1/v2 limits.
//!
//! A fn whose `image` is `file://<absolute directory>` runs the `entrypoint`
//! (then `cmd`) of that directory's `func.yaml` as a local process:
//!
//! - **Sandbox** (`bwrap`, default when installed): bubblewrap is spawned as
//!   the unprivileged [`ProcessDriverConfig::uid`]/`gid` (no supplementary
//!   groups), so it builds a user namespace, with new pid, ipc, uts, cgroup
//!   and mount namespaces, `--cap-drop ALL`, no new privileges, no nested user
//!   namespaces, `--die-with-parent` and `--new-session`. Inside: the host's
//!   `/usr` and `/etc` read-only (`/bin`, `/sbin`, `/lib*` as the host has
//!   them: symlinks or read-only binds), a fresh `/proc` and `/dev`, a private
//!   tmpfs `/tmp` with a size limit, the instance's iofs directory at
//!   `/tmp/iofs` (so `FN_LISTENER=unix:/tmp/iofs/lsnr.sock` exactly as in a
//!   container), extra read-only paths ([`ENV_RO_PATHS`]) at their host path,
//!   and the function directory read-only at `/function`, also the working
//!   directory. Network: the host's by default, or a private namespace with
//!   only `lo` ([`ENV_NETWORK`]=`none`). A seccomp filter ([`ENV_SECCOMP`])
//!   denies keyrings, BPF, perf, io_uring, module, mount, ptrace and clock
//!   calls. The server's probe at start drops what an older bwrap lacks
//!   (with a warning).
//! - **Limits**: one cgroup per instance under one parent per controller
//!   (v1: `/sys/fs/cgroup/{memory,pids}/<parent>/<id>`, v2:
//!   `/sys/fs/cgroup/<parent>/<id>`), joined before the child execs anything:
//!   memory = the fn's `memory` MB with no swap, pids = [`ENV_MAX_PIDS`]; Fn's
//!   ulimits (`nofile`, `memlock`, `sigpending`, `msgqueue`). The cgroup is
//!   removed when the instance ends; an OOM kill is reported as
//!   `ExitInfo { code: 137, oom_killed: true }`.
//! - **Environment**: exactly the instance's `env`, on top of
//!   `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
//!   `HOME=/tmp` and `LANG=C.UTF-8` (the instance's env wins). Nothing else
//!   from the server's environment.
//! - **The function directory** must be readable (directories `r-x`, files
//!   `r--`) by the sandbox uid (default 65534, `nobody`): `check_image` says
//!   so when it is not.
//! - **Unsandboxed** ([`ENV_SANDBOX`]=`none`, or `auto` without a working
//!   bwrap): the same process model (uid switch when the server is root, no
//!   new privileges, death with the server, cgroup limits), but with the
//!   host's whole file system and the function directory as working
//!   directory (command words starting with `/function/` are rewritten to
//!   it); the iofs directory cannot be remapped, so
//!   [`Driver::iofs_mount`] returns the host directory. `health()` then carries
//!   `"unsandboxed": true` and a warning.
//! - **Death with the server**: every instance is forked from one dedicated
//!   thread that lives as long as the process, so bwrap's
//!   `--die-with-parent` (`PR_SET_PDEATHSIG`, which is per *thread*) fires
//!   only when the server dies. A crashed server's cgroups are emptied and
//!   removed by [`Driver::cleanup_leftovers`] at the next start (or by
//!   [`cleanup_cgroup_parent`] for another server's parent).
//! - **Cold starts** ([`ENV_POOL_SIZE`], default 4): sandboxes are built
//!   ahead of need. When the server is root, a pooled sandbox is bwrap
//!   already run (same options, same uid, seccomp on, in a fresh cgroup
//!   with the pids limit) around a bash that waits on a pipe; `/function`
//!   and `/tmp/iofs` in it are bound from an empty per-sandbox directory
//!   under a shared mount (`/run/fnrs-pool/<cgroup parent>`), and a start
//!   mounts the fn directory (read-only, nosuid, nodev, flags set before
//!   attaching) and the iofs directory there — mount propagation carries
//!   them into the sandbox — renames the cgroup to the instance id, sets
//!   the memory limit and sends the environment and command. Pools are
//!   kept per `/tmp` size (the fn's memory unless [`ENV_TMP_SIZE_MB`]),
//!   for the 4 sizes used last (128 MB before any start). Not root: the
//!   pooled process is a bash outside the sandbox, already in its cgroup,
//!   that execs bwrap with the instance's command line. A start without a
//!   waiting sandbox forks bwrap directly as before. The pool is emptied
//!   when the driver is dropped; a crashed server's sandboxes die with it
//!   and their cgroups and mounts are removed at the next start.
//! - **Not supported**: CPU limits (Fn's master has none for fns either).
//!   v2 is implemented but only checked against a plain directory here (this
//!   machine has v1); under v2 the parent must be creatable with the memory
//!   controller enabled (e.g. not inside a container whose cgroup root holds
//!   the server itself), else the driver warns and runs without limits.
//!
//! The command is `entrypoint` split shell-like (quotes and backslashes group
//! words, no expansions), then `cmd` split the same way — what Fn's CLI puts
//! in an image's exec-form `ENTRYPOINT`/`CMD`. It is not run through a shell.

#![cfg(target_os = "linux")]

mod cgroup;
mod funcyaml;
mod image;
mod net;
mod pool;
mod seccomp;
mod spawn;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use fnrs_driver::{Driver, DriverError, ExitInfo, IOFS_MOUNT, Instance, InstanceIo, InstanceSpec};
use tokio::sync::{Notify, watch};

pub use cgroup::CgroupVersion;
pub use funcyaml::{FUNC_YAML, FuncYaml, read_func_yaml, split_command};
pub use image::{FILE_SCHEME, image_path};
pub use spawn::Rlimits;

/// `FN_PROCESS_SANDBOX`: `auto` (default: bwrap when it works, else
/// unsandboxed with a warning), `bwrap` (refuse to start without it), `none`.
pub const ENV_SANDBOX: &str = "FN_PROCESS_SANDBOX";
/// `FN_PROCESS_NETWORK`: `private` (default: the sandbox's own namespace
/// with outbound network through pasta, the host's loopback not reachable),
/// `none` (only `lo`) or `shared` (the host's network, the server's API on
/// loopback included: an explicit opt-in, warned about).
pub const ENV_NETWORK: &str = "FN_PROCESS_NETWORK";
/// `FN_PROCESS_PASTA`: path of the `pasta` binary (Debian's `passt`) for
/// the private network. Default: the first of `/usr/bin/pasta`,
/// `/usr/local/bin/pasta`, `/bin/pasta` that exists.
pub const ENV_PASTA: &str = "FN_PROCESS_PASTA";
/// `FN_PROCESS_ROOTS`: `:`-separated absolute directories; when set, only
/// directories under one of them may be `file://` images. Default: any.
pub const ENV_ROOTS: &str = "FN_PROCESS_ROOTS";
/// `FN_MAX_PIDS`: the pids limit of an instance (default 50, as Fn).
pub const ENV_MAX_PIDS: &str = "FN_MAX_PIDS";
/// `FN_PROCESS_BWRAP`: path of the `bwrap` binary. Default: the first of
/// `/usr/local/bin/bwrap`, `/usr/bin/bwrap`, `/bin/bwrap` that exists.
pub const ENV_BWRAP: &str = "FN_PROCESS_BWRAP";
/// `FN_PROCESS_UID`: the uid functions run as when the server is root
/// (default 65534).
pub const ENV_UID: &str = "FN_PROCESS_UID";
/// `FN_PROCESS_GID`: the gid functions run as when the server is root
/// (default 65534).
pub const ENV_GID: &str = "FN_PROCESS_GID";
/// `FN_PROCESS_TMP_SIZE_MB`: size of the private `/tmp` in MiB; 0 (default)
/// means the fn's memory (tmpfs pages count against the memory limit anyway).
pub const ENV_TMP_SIZE_MB: &str = "FN_PROCESS_TMP_SIZE_MB";
/// `FN_PROCESS_CGROUP_PARENT`: the parent cgroup (relative to each
/// hierarchy's root) of all instance cgroups; default `fnrs`. Everything in it
/// is killed and removed at start, so give each server on a host its own.
pub const ENV_CGROUP_PARENT: &str = "FN_PROCESS_CGROUP_PARENT";
/// `FN_PROCESS_RO_PATHS`: `:`-separated host paths bound read-only at the
/// same path in the sandbox (runtimes outside `/usr`, e.g. a venv in `/opt`).
pub const ENV_RO_PATHS: &str = "FN_PROCESS_RO_PATHS";
/// `FN_PROCESS_SECCOMP`: `true` (default) installs a seccomp filter in the
/// sandbox that denies (EPERM) keyrings, BPF, perf, io_uring, module, mount,
/// ptrace and clock calls and foreign ABIs (x86_64 only); `false` does not.
pub const ENV_SECCOMP: &str = "FN_PROCESS_SECCOMP";
/// `FN_PROCESS_POOL_SIZE`: how many sandbox launchers are kept waiting,
/// each already in a fresh cgroup as the sandbox uid, so that a cold start
/// skips the fork of the server and the cgroup join (≈ 15 ms on cgroup v1).
/// Default 4; 0 turns the pool off. Only with the bwrap sandbox (bubblewrap
/// >= 0.8) and bash installed.
pub const ENV_POOL_SIZE: &str = "FN_PROCESS_POOL_SIZE";
/// `FN_MAX_OPEN_FILES`: `RLIMIT_NOFILE` (default 350, as Fn).
pub const ENV_MAX_OPEN_FILES: &str = "FN_MAX_OPEN_FILES";
/// `FN_MAX_LOCKED_MEMORY`: `RLIMIT_MEMLOCK` in bytes (default 65536, as Fn).
pub const ENV_MAX_LOCKED_MEMORY: &str = "FN_MAX_LOCKED_MEMORY";
/// `FN_MAX_PENDING_SIGNALS`: `RLIMIT_SIGPENDING` (default 5000, as Fn).
pub const ENV_MAX_PENDING_SIGNALS: &str = "FN_MAX_PENDING_SIGNALS";
/// `FN_MAX_MESSAGE_QUEUE`: `RLIMIT_MSGQUEUE` in bytes (default 819200, as Fn).
pub const ENV_MAX_MESSAGE_QUEUE: &str = "FN_MAX_MESSAGE_QUEUE";

/// The `PATH` given to functions unless their env sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the function directory appears inside the sandbox.
pub const FUNCTION_MOUNT: &str = "/function";

/// [`ENV_SANDBOX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// bwrap when it is installed and works, else unsandboxed with a warning.
    #[default]
    Auto,
    /// bwrap or refuse to start.
    Bwrap,
    /// No sandbox (limits still apply).
    None,
}

impl FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(SandboxMode::Auto),
            "bwrap" => Ok(SandboxMode::Bwrap),
            "none" => Ok(SandboxMode::None),
            _ => Err(format!(
                "{ENV_SANDBOX} must be auto, bwrap or none, not {s:?}"
            )),
        }
    }
}

/// [`ENV_NETWORK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The sandbox's own namespace, served by pasta (outbound only).
    #[default]
    Private,
    /// A private namespace with only the loopback interface.
    None,
    /// The host's network namespace.
    Shared,
}

impl NetworkMode {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Private => "private",
            NetworkMode::None => "none",
            NetworkMode::Shared => "shared",
        }
    }
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "private" => Ok(NetworkMode::Private),
            "none" => Ok(NetworkMode::None),
            "shared" | "host" => Ok(NetworkMode::Shared),
            _ => Err(format!(
                "{ENV_NETWORK} must be private, none or shared, not {s:?}"
            )),
        }
    }
}

/// Split a `:`-separated path list ([`ENV_ROOTS`], [`ENV_RO_PATHS`]);
/// empty entries are dropped.
pub fn parse_path_list(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Settings of the process driver; each field names the environment
/// variable the server maps onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessDriverConfig {
    /// [`ENV_SANDBOX`], default `auto`.
    pub sandbox: SandboxMode,
    /// [`ENV_NETWORK`], default `private`.
    pub network: NetworkMode,
    /// [`ENV_PASTA`], default `None` (look in the usual places).
    pub pasta: Option<PathBuf>,
    /// [`ENV_ROOTS`], default empty (any directory).
    pub roots: Vec<PathBuf>,
    /// [`ENV_MAX_PIDS`], default 50.
    pub max_pids: u32,
    /// [`ENV_TMP_SIZE_MB`], default 0 (= the fn's memory).
    pub tmp_size_mb: u64,
    /// [`ENV_UID`], default 65534.
    pub uid: u32,
    /// [`ENV_GID`], default 65534.
    pub gid: u32,
    /// [`ENV_CGROUP_PARENT`], default `fnrs`.
    pub cgroup_parent: String,
    /// [`ENV_BWRAP`], default `None` (look in the usual places).
    pub bwrap: Option<PathBuf>,
    /// [`ENV_RO_PATHS`], default empty.
    pub ro_paths: Vec<PathBuf>,
    /// [`ENV_MAX_OPEN_FILES`] etc., defaults as Fn's.
    pub rlimits: Rlimits,
    /// [`ENV_SECCOMP`], default `true`.
    pub seccomp: bool,
    /// [`ENV_POOL_SIZE`], default 4.
    pub pool_size: usize,
}

impl Default for ProcessDriverConfig {
    fn default() -> Self {
        ProcessDriverConfig {
            sandbox: SandboxMode::Auto,
            network: NetworkMode::Private,
            pasta: None,
            roots: Vec::new(),
            max_pids: 50,
            tmp_size_mb: 0,
            uid: 65534,
            gid: 65534,
            cgroup_parent: "fnrs".to_string(),
            bwrap: None,
            ro_paths: Vec::new(),
            rlimits: Rlimits {
                nofile: Some(350),
                memlock: Some(65536),
                sigpending: Some(5000),
                msgqueue: Some(819200),
            },
            seccomp: true,
            pool_size: 4,
        }
    }
}

impl ProcessDriverConfig {
    /// Build a config from `FN_*` settings looked up by name (e.g.
    /// `|k| std::env::var(k).ok()`, or a map of parsed flags); unset or empty
    /// settings keep their defaults. The error names the bad setting.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = ProcessDriverConfig::default();
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        fn num<T: FromStr>(k: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("{k} must be a non-negative integer, not {v:?}"))
        }
        if let Some(v) = get(ENV_SANDBOX) {
            c.sandbox = v.parse()?;
        }
        if let Some(v) = get(ENV_NETWORK) {
            c.network = v.parse()?;
        }
        if let Some(v) = get(ENV_ROOTS) {
            c.roots = parse_path_list(&v);
        }
        if let Some(v) = get(ENV_RO_PATHS) {
            c.ro_paths = parse_path_list(&v);
        }
        if let Some(v) = get(ENV_MAX_PIDS) {
            c.max_pids = num(ENV_MAX_PIDS, &v)?;
        }
        if let Some(v) = get(ENV_TMP_SIZE_MB) {
            c.tmp_size_mb = num(ENV_TMP_SIZE_MB, &v)?;
        }
        if let Some(v) = get(ENV_UID) {
            c.uid = num(ENV_UID, &v)?;
        }
        if let Some(v) = get(ENV_GID) {
            c.gid = num(ENV_GID, &v)?;
        }
        if let Some(v) = get(ENV_CGROUP_PARENT) {
            c.cgroup_parent = v.trim().to_string();
        }
        if let Some(v) = get(ENV_BWRAP) {
            c.bwrap = Some(PathBuf::from(v.trim()));
        }
        if let Some(v) = get(ENV_PASTA) {
            c.pasta = Some(PathBuf::from(v.trim()));
        }
        if let Some(v) = get(ENV_POOL_SIZE) {
            c.pool_size = num(ENV_POOL_SIZE, &v)?;
        }
        if let Some(v) = get(ENV_SECCOMP) {
            c.seccomp = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(format!("{ENV_SECCOMP} must be true or false, not {v:?}")),
            };
        }
        // Fn's ulimits: a negative or zero value leaves the limit alone.
        let limit = |k: &str, d: Option<u64>| -> Result<Option<u64>, String> {
            match get(k) {
                None => Ok(d),
                Some(v) => {
                    let n: i64 = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("{k} must be an integer, not {v:?}"))?;
                    Ok((n > 0).then_some(n as u64))
                }
            }
        };
        c.rlimits.nofile = limit(ENV_MAX_OPEN_FILES, c.rlimits.nofile)?;
        c.rlimits.memlock = limit(ENV_MAX_LOCKED_MEMORY, c.rlimits.memlock)?;
        c.rlimits.sigpending = limit(ENV_MAX_PENDING_SIGNALS, c.rlimits.sigpending)?;
        c.rlimits.msgqueue = limit(ENV_MAX_MESSAGE_QUEUE, c.rlimits.msgqueue)?;
        Ok(c)
    }
}

/// Longest time to resolve an image and read its `func.yaml`.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Image resolutions at once on blocking threads.
const RESOLVE_CONCURRENCY: usize = 32;

/// See [`ProcessDriver::resolve`].
fn resolve_image_dir(
    image: &str,
    roots: &[PathBuf],
    reader: Option<(u32, u32)>,
) -> Result<(PathBuf, FuncYaml), DriverError> {
    let dir = image::resolve_image(image, roots)?;
    let dir_fd = image::open_dir(image, &dir, reader)?;
    let fy = funcyaml::read_func_yaml_at(&dir_fd, &dir, reader)?;
    fy.argv()?;
    Ok((dir, fy))
}

/// Runs `file://` images as sandboxed local processes.
pub struct ProcessDriver {
    config: ProcessDriverConfig,
    /// The network functions get (the setting, or what it fell back to).
    network: NetworkMode,
    /// pasta, when the network is private.
    pasta: Option<PathBuf>,
    /// The bwrap binary when sandboxing, `None` when unsandboxed.
    bwrap: Option<PathBuf>,
    cgroups: Option<cgroup::Cgroups>,
    /// Canonical roots.
    roots: Arc<[PathBuf]>,
    /// Bounds the image resolutions in progress on blocking threads (one
    /// stuck on a hung file system keeps its permit).
    resolving: Arc<tokio::sync::Semaphore>,
    /// Switch to `config.uid`/`gid` in the child (the server is root).
    drop_to: Option<(u32, u32)>,
    /// The part of the bwrap command line that is the same for every
    /// instance: namespaces and system directories.
    base_args: Vec<OsString>,
    /// bwrap supports `--size` (a /tmp size limit).
    tmp_size: bool,
    /// The seccomp program given to bwrap, when in use.
    seccomp: Option<Vec<u8>>,
    /// Waiting sandbox launchers ([`ENV_POOL_SIZE`]).
    pool: Option<pool::Pool>,
    warnings: Vec<String>,
}

impl std::fmt::Debug for ProcessDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessDriver")
            .field("bwrap", &self.bwrap)
            .field("cgroups", &self.cgroups.as_ref().map(|c| c.version))
            .field("drop_to", &self.drop_to)
            .field("pool", &self.pool.as_ref().map(|p| p.target()))
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

fn find_bwrap(configured: Option<&Path>) -> Option<PathBuf> {
    spawn::find_program(
        configured,
        &["/usr/local/bin/bwrap", "/usr/bin/bwrap", "/bin/bwrap"],
    )
}

/// Namespaces and system directories of every sandbox. `disable_userns`
/// (bwrap >= 0.8) forbids nested user namespaces.
fn base_bwrap_args(network: NetworkMode, disable_userns: bool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(OsString::from(s));
    push("--unshare-all");
    push("--unshare-user");
    if disable_userns {
        push("--disable-userns");
    }
    for s in ["--die-with-parent", "--new-session", "--cap-drop", "ALL"] {
        push(s);
    }
    if network == NetworkMode::Shared {
        push("--share-net");
    }
    for s in ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"] {
        push(s);
    }
    for d in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(d) {
            Ok(md) if md.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(d) {
                    a.push("--symlink".into());
                    a.push(target.into_os_string());
                    a.push(d.into());
                }
            }
            Ok(md) if md.is_dir() => {
                for s in ["--ro-bind", d, d] {
                    a.push(s.into());
                }
            }
            _ => {}
        }
    }
    // A resolv.conf that points into /run (systemd-resolved, resolvconf).
    if network != NetworkMode::None
        && let Ok(target) = std::fs::read_link("/etc/resolv.conf")
        && let Some(parent) = target.parent()
        && target.is_absolute()
        && parent.starts_with("/run")
    {
        a.push("--ro-bind-try".into());
        a.push(parent.as_os_str().to_owned());
        a.push(parent.as_os_str().to_owned());
    }
    for s in ["--proc", "/proc", "--dev", "/dev"] {
        a.push(s.into());
    }
    a
}

fn base_env() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/tmp".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ProcessDriver {
    /// Check the configuration, find bwrap (and try it once), set up the
    /// cgroup parents. `Err(Unavailable)` when `sandbox` is `bwrap` and bwrap
    /// is missing or does not work; bad roots or paths are `Err(Internal)`.
    /// Blocking (runs a short probe process); call it at start.
    pub fn new(config: ProcessDriverConfig) -> Result<Self, DriverError> {
        let mut warnings = Vec::new();
        let mut roots = Vec::new();
        for r in &config.roots {
            let c = std::fs::canonicalize(r)
                .map_err(|e| DriverError::Internal(format!("{ENV_ROOTS}: {}: {e}", r.display())))?;
            roots.push(c);
        }
        for p in &config.ro_paths {
            if !p.is_absolute() || !p.exists() {
                return Err(DriverError::Internal(format!(
                    "{ENV_RO_PATHS}: {} must be an existing absolute path",
                    p.display()
                )));
            }
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let drop_to = (euid == 0 && config.uid != 0).then_some((config.uid, config.gid));
        if euid == 0 && config.uid == 0 {
            warnings.push(format!(
                "{ENV_UID}=0: functions run as root inside their namespaces"
            ));
        }

        let mut base_args = base_bwrap_args(config.network, true);
        let mut tmp_size = true;
        let mut seccomp = None;
        let mut bwrap = None;
        if config.sandbox != SandboxMode::None {
            let problem = match find_bwrap(config.bwrap.as_deref()) {
                None => Some(match &config.bwrap {
                    Some(p) => format!("bwrap not found at {}", p.display()),
                    None => "bwrap (bubblewrap) is not installed".to_string(),
                }),
                Some(path) => {
                    let program = if config.seccomp {
                        seccomp::program()
                    } else {
                        None
                    };
                    if config.seccomp && program.is_none() {
                        warnings.push(format!(
                            "no seccomp filter on this architecture ({ENV_SECCOMP})"
                        ));
                    }
                    // Older bwraps lack --disable-userns (0.8) and --size
                    // (0.5), a kernel may lack seccomp: try without them
                    // before giving up.
                    let mut first_err = None;
                    let ladder = [
                        (true, true, true),
                        (true, true, false),
                        (false, true, false),
                        (false, false, false),
                    ];
                    for (disable_userns, size, filter) in ladder {
                        let filter = if filter { program.as_deref() } else { None };
                        let args = base_bwrap_args(config.network, disable_userns);
                        match probe_bwrap(&path, &args, size, filter, drop_to) {
                            Ok(()) => {
                                if !disable_userns {
                                    warnings.push(
                                        "bwrap has no --disable-userns: functions may create \
                                         nested user namespaces (bubblewrap >= 0.8 forbids it)"
                                            .to_string(),
                                    );
                                }
                                if !size {
                                    warnings.push(
                                        "bwrap has no --size: /tmp is bounded only by the \
                                         memory limit (bubblewrap >= 0.5 has it)"
                                            .to_string(),
                                    );
                                }
                                if program.is_some() && filter.is_none() {
                                    warnings.push(format!(
                                        "the seccomp filter does not work here: functions run \
                                         without it ({ENV_SECCOMP})"
                                    ));
                                }
                                base_args = args;
                                tmp_size = size;
                                seccomp = filter.map(<[u8]>::to_vec);
                                bwrap = Some(path.clone());
                                break;
                            }
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                    match (&bwrap, first_err) {
                        (None, Some(e)) => {
                            Some(format!("bwrap at {} does not work: {e}", path.display()))
                        }
                        _ => None,
                    }
                }
            };
            if let Some(problem) = problem {
                if config.sandbox == SandboxMode::Bwrap {
                    return Err(DriverError::Unavailable(format!(
                        "{problem} ({ENV_SANDBOX}=bwrap)"
                    )));
                }
                warnings.push(format!(
                    "{problem}: functions run UNSANDBOXED with the host's file system \
                     (install bubblewrap, or set {ENV_SANDBOX}=bwrap to refuse to start without it)"
                ));
            }
        }
        if bwrap.is_none() && config.sandbox == SandboxMode::None {
            warnings.push(format!(
                "{ENV_SANDBOX}=none: functions run UNSANDBOXED with the host's file system"
            ));
        }
        let (network, pasta) = effective_network(&config, bwrap.as_deref(), &base_args, drop_to);
        match (&network, config.network) {
            (Err(w), _) => warnings.push(w.clone()),
            (Ok(NetworkMode::Shared), _) => warnings.push(format!(
                "{ENV_NETWORK}=shared: functions share the host's network and reach \
                 everything on its loopback, this server's API included"
            )),
            _ => {}
        }
        let network = match (network, bwrap.is_some()) {
            (Ok(n), _) => n,
            (Err(_), true) => NetworkMode::None,
            (Err(_), false) => NetworkMode::Shared,
        };

        if let Some((uid, gid)) = drop_to {
            for p in &config.ro_paths {
                if let Some(why) = image::access_problem(p, uid, gid) {
                    warnings.push(format!("{ENV_RO_PATHS}: {why}"));
                }
            }
        }

        let cgroups = match cgroup::Cgroups::setup(&config.cgroup_parent) {
            Ok(c) => Some(c),
            Err(e) => {
                warnings.push(format!(
                    "no cgroup limits (memory, pids) for functions: {e}"
                ));
                None
            }
        };
        // The launcher pool: bwrap with --disable-userns (>= 0.8, so it
        // also has --clearenv) and bash.
        let mut pool = None;
        // Prebuilt sandboxes need mounts on the host: root only.
        let prebuilt = match (&bwrap, euid == 0 && drop_to.is_some()) {
            (Some(b), true) if config.pool_size > 0 => {
                match pool::setup_root(&config.cgroup_parent) {
                    Ok(root) => {
                        let mut base = base_args.clone();
                        for p in &config.ro_paths {
                            base.push("--ro-bind".into());
                            base.push(p.as_os_str().to_owned());
                            base.push(p.as_os_str().to_owned());
                        }
                        Some(pool::Prebuilt {
                            bwrap: b.clone(),
                            base_args: base,
                            tmp_size_mb: if tmp_size { config.tmp_size_mb } else { 0 },
                            root,
                        })
                    }
                    Err(e) => {
                        warnings.push(format!(
                            "no prebuilt sandboxes (mount of {}: {e}): cold starts are slower",
                            pool::root_path(&config.cgroup_parent).display()
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        // A private network is attached to prebuilt sandboxes only.
        let pool_network_ok = network != NetworkMode::Private || prebuilt.is_some();
        if config.pool_size > 0 && bwrap.is_some() && !pool_network_ok {
            warnings.push(format!(
                "no launcher pool ({ENV_POOL_SIZE}) with {ENV_NETWORK}=private without prebuilt \
                 sandboxes: cold starts are slower"
            ));
        }
        if config.pool_size > 0
            && pool_network_ok
            && bwrap.is_some()
            && base_args.iter().any(|a| a == "--disable-userns")
        {
            match pool::find_bash() {
                Some(bash) => {
                    pool = Some(pool::Pool::new(
                        pool::LauncherConfig {
                            bash,
                            cgroups: cgroups.clone(),
                            max_pids: config.max_pids,
                            rlimits: config.rlimits,
                            drop_to,
                            seccomp: seccomp.clone(),
                            env: base_env(),
                            prebuilt,
                            pasta: pasta.clone(),
                        },
                        config.pool_size,
                    ))
                }
                None => warnings.push(format!(
                    "no bash: no launcher pool ({ENV_POOL_SIZE}), cold starts are slower"
                )),
            }
        }
        for w in &warnings {
            tracing::warn!(driver = "process", "{w}");
        }
        tracing::info!(
            sandbox = bwrap
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
            cgroups = cgroups
                .as_ref()
                .map(|c| c.version.as_str())
                .unwrap_or("none"),
            uid = drop_to.map(|d| d.0).unwrap_or(euid),
            "process driver ready"
        );
        Ok(ProcessDriver {
            config,
            network,
            pasta,
            bwrap,
            cgroups,
            roots: roots.into(),
            resolving: Arc::new(tokio::sync::Semaphore::new(RESOLVE_CONCURRENCY)),
            drop_to,
            base_args,
            tmp_size,
            seccomp,
            pool,
            warnings,
        })
    }

    /// Whether instances run inside bwrap.
    pub fn sandboxed(&self) -> bool {
        self.bwrap.is_some()
    }

    /// The cgroup version in use, `None` when no limits can be applied.
    pub fn cgroup_version(&self) -> Option<CgroupVersion> {
        self.cgroups.as_ref().map(|c| c.version)
    }

    /// The parent cgroup directories (one per controller hierarchy).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        self.cgroups
            .as_ref()
            .map(|c| c.parents().to_vec())
            .unwrap_or_default()
    }

    /// The warnings also logged at start and shown by `health()`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Resolve and check a `file://` image: allowed root, a directory the
    /// sandbox user can read, a valid `func.yaml` with something to run.
    /// Returns the canonical directory and the parsed `func.yaml`. Blocks:
    /// see [`ProcessDriver::resolve_async`].
    pub fn resolve(&self, image: &str) -> Result<(PathBuf, FuncYaml), DriverError> {
        resolve_image_dir(image, &self.roots, self.drop_to)
    }

    /// [`ProcessDriver::resolve`] on a blocking thread, within
    /// [`RESOLVE_TIMEOUT`]: the directory and `func.yaml` are the fn
    /// author's, maybe on a slow or hung file system.
    pub async fn resolve_async(&self, image: &str) -> Result<(PathBuf, FuncYaml), DriverError> {
        let slow = || {
            DriverError::BadImage(format!(
                "Invalid image {image:?}: reading its directory and {FUNC_YAML} took longer than {} s",
                RESOLVE_TIMEOUT.as_secs()
            ))
        };
        let deadline = tokio::time::Instant::now() + RESOLVE_TIMEOUT;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.resolving).acquire_owned())
            .await
            .map_err(|_| slow())?
            .map_err(|_| DriverError::Internal("resolver closed".into()))?;
        let (img, roots, drop_to) = (image.to_string(), Arc::clone(&self.roots), self.drop_to);
        let task = tokio::task::spawn_blocking(move || {
            let r = resolve_image_dir(&img, &roots, drop_to);
            drop(permit);
            r
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(DriverError::Internal(format!("resolving {image:?}: {e}"))),
            Err(_) => Err(slow()),
        }
    }

    fn bwrap_args(
        &self,
        spec: &InstanceSpec,
        fn_dir: &Path,
        seccomp_fd: Option<i32>,
        handshake: Option<&net::Handshake>,
    ) -> Vec<OsString> {
        let mut a = self.base_args.clone();
        if let Some(h) = handshake {
            a.extend(h.bwrap_args());
        }
        if let Some(fd) = seccomp_fd {
            a.push("--seccomp".into());
            a.push(fd.to_string().into());
        }
        let tmp_mb = if self.config.tmp_size_mb > 0 {
            self.config.tmp_size_mb
        } else {
            spec.memory_mb
        };
        if tmp_mb > 0 && self.tmp_size {
            a.push("--size".into());
            a.push(tmp_mb.saturating_mul(1024 * 1024).to_string().into());
        }
        a.push("--tmpfs".into());
        a.push("/tmp".into());
        if let Some(iofs) = &spec.iofs_dir {
            a.push("--bind".into());
            a.push(iofs.as_os_str().to_owned());
            a.push(IOFS_MOUNT.into());
        }
        for p in &self.config.ro_paths {
            a.push("--ro-bind".into());
            a.push(p.as_os_str().to_owned());
            a.push(p.as_os_str().to_owned());
        }
        a.push("--ro-bind".into());
        a.push(fn_dir.as_os_str().to_owned());
        a.push(FUNCTION_MOUNT.into());
        a.push("--chdir".into());
        a.push(FUNCTION_MOUNT.into());
        a.push("--".into());
        a
    }

    fn child_setup(
        &self,
        cg: Option<&cgroup::InstanceCgroup>,
        keep_fds: Vec<i32>,
    ) -> spawn::ChildSetup {
        spawn::ChildSetup {
            cgroup_procs: cg.map(|c| c.procs_paths()).unwrap_or_default(),
            rlimits: self.config.rlimits,
            drop_to: self.drop_to,
            // bwrap sets both itself (and must not be hindered if setuid).
            no_new_privs: self.bwrap.is_none(),
            pdeathsig: self.bwrap.is_none(),
            keep_fds,
        }
    }

    /// Bring up the private network of a sandbox just forked with a
    /// [`net::Handshake`]: learn its pid, attach pasta (forked from the
    /// spawner thread), then let its command run. Dropping this future, or
    /// an error, kills pasta.
    async fn attach_network(
        &self,
        info: std::os::fd::OwnedFd,
        block: std::os::fd::OwnedFd,
    ) -> Result<net::Pasta, String> {
        let pasta = self.pasta.clone().ok_or("no pasta")?;
        let pid =
            tokio::task::spawn_blocking(move || net::read_child_pid(info, net::READY_TIMEOUT))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        let starting = spawn::on_spawner_thread(move || net::spawn(&pasta, pid))
            .await
            .ok_or("spawner failed")?
            .map_err(|e| format!("cannot start pasta: {e}"))?;
        tokio::task::spawn_blocking(move || {
            let p = starting.wait_ready(net::READY_TIMEOUT)?;
            net::release(block)?;
            Ok::<_, std::io::Error>(p)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

impl ProcessDriver {
    /// Start an instance with a waiting launcher: its cgroup becomes the
    /// instance's (renamed to the id, memory limit set), then it gets
    /// bwrap's command line. On error the launcher comes back, unusable:
    /// [`pool::discard_now`] it (its cgroup may have the instance's name).
    fn start_pooled(
        &self,
        mut l: pool::Launcher,
        spec: &InstanceSpec,
        dir: &Path,
        argv: &[String],
    ) -> Result<Box<dyn Instance>, (String, Box<pool::Launcher>)> {
        let Some(bwrap) = &self.bwrap else {
            return Err(("no bwrap".into(), Box::new(l)));
        };
        if let Some(cg) = l.cgroup_mut()
            && let Err(e) = cg
                .rename(&spec.id)
                .and_then(|()| cg.set_memory(spec.memory_mb))
        {
            return Err((format!("cgroup: {e}"), Box::new(l)));
        }
        // The instance's env on top of the base (later wins); what
        // setenv(3) refuses is left out.
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in base_env()
            .into_iter()
            .chain(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())))
        {
            if k.is_empty() || k.contains('=') {
                continue;
            }
            env.retain(|(k0, _)| *k0 != k);
            env.push((k, v));
        }
        let launched = if l.prebuilt() {
            l.run(dir, spec.iofs_dir.as_deref(), &env, argv)
        } else {
            let mut args: Vec<OsString> = vec![bwrap.as_os_str().to_owned(), "--clearenv".into()];
            for (k, v) in env {
                args.push("--setenv".into());
                args.push(k.into());
                args.push(v.into());
            }
            args.extend(self.bwrap_args(spec, dir, l.seccomp_fd, None));
            args.extend(argv.iter().map(OsString::from));
            l.launch(&args)
        };
        if let Err(e) = launched {
            return Err((format!("launcher: {e}"), Box::new(l)));
        }
        let (mut child, cgroup, mounts, network) = l.into_parts();
        if !spec.stdin {
            // Closed at once: the function reads end of file.
            drop(child.stdin.take());
        }
        tracing::debug!(instance = %spec.id, pid = child.id().unwrap_or(0), dir = %dir.display(), "process instance started (pooled)");
        Ok(make_instance(
            child,
            cgroup.map(Arc::new),
            spec.id.clone(),
            Belongings { mounts, network },
        ))
    }
}

/// Mark every descriptor above 2 that this process inherited (or opened)
/// without close-on-exec as close-on-exec, so that no child gets it (the
/// driver does the same in every child; this also covers children spawned
/// by anything else). Call once at start.
pub fn close_inherited_fds_on_exec() {
    // SAFETY: only descriptor flags change; nothing in the server relies on
    // inheriting a descriptor through exec.
    unsafe { spawn::cloexec_from(3) }
}

/// Kill everything in every instance cgroup under `parent` (a parent as in
/// [`ProcessDriverConfig::cgroup_parent`], e.g. another, dead server's), remove
/// those cgroups and then the parent itself. Creates nothing; a missing
/// parent is not an error. Returns how many instance cgroups were removed.
/// For a server's own parent use [`Driver::cleanup_leftovers`] instead.
pub async fn cleanup_cgroup_parent(parent: &str) -> Result<usize, DriverError> {
    let parent = parent.to_string();
    tokio::task::spawn_blocking(move || {
        let cg = cgroup::Cgroups::existing(&parent).map_err(DriverError::Internal)?;
        let removed = cg.cleanup_all(&[]);
        // Its prebuilt sandboxes' mounts.
        pool::cleanup_root(&pool::root_path(&parent));
        cg.remove_parents().map_err(|e| {
            DriverError::Internal(format!("cannot remove cgroup parent {parent}: {e}"))
        })?;
        Ok(removed)
    })
    .await
    .map_err(|e| DriverError::Internal(format!("cgroup cleanup failed: {e}")))?
}

/// The network functions get for the configured mode, and pasta when
/// private; `Err` is the warning when it cannot be had (then `none` in a
/// sandbox, never `shared` silently). Blocking (a private network is tried
/// once on a sandbox).
fn effective_network(
    config: &ProcessDriverConfig,
    bwrap: Option<&Path>,
    base_args: &[OsString],
    drop_to: Option<(u32, u32)>,
) -> (Result<NetworkMode, String>, Option<PathBuf>) {
    let Some(bwrap) = bwrap else {
        if config.network == NetworkMode::Shared {
            return (Ok(NetworkMode::Shared), None);
        }
        return (
            Err(format!(
                "{ENV_NETWORK}={} needs the bwrap sandbox: functions share the host's network",
                config.network.as_str()
            )),
            None,
        );
    };
    if config.network != NetworkMode::Private {
        return (Ok(config.network), None);
    }
    let fallback = "functions get no network (as with =none)";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return (
            Err(format!(
                "{ENV_NETWORK}=private needs the server to run as root (pasta is attached to \
                 each sandbox from outside): {fallback}; set {ENV_NETWORK}=none to say so"
            )),
            None,
        );
    }
    let Some(pasta) = net::find_pasta(config.pasta.as_deref()) else {
        let what = match &config.pasta {
            Some(p) => format!("pasta not found at {} ({ENV_PASTA})", p.display()),
            None => "pasta (Debian package passt) is not installed".to_string(),
        };
        return (
            Err(format!(
                "{ENV_NETWORK}=private: {what}: {fallback}; install passt, or set {ENV_NETWORK}=none"
            )),
            None,
        );
    };
    // Twice: one failure under a burst of load is not a verdict.
    let probed = net::probe(bwrap, base_args, drop_to, &pasta).or_else(|e| {
        tracing::debug!(error = %e, "private network probe failed, trying again");
        net::probe(bwrap, base_args, drop_to, &pasta)
    });
    match probed {
        Ok(()) => (Ok(NetworkMode::Private), Some(pasta)),
        Err(e) => (
            Err(format!(
                "{ENV_NETWORK}=private: pasta at {} does not work: {e}: {fallback}",
                pasta.display()
            )),
            None,
        ),
    }
}

/// Run `bwrap <base args> [--seccomp FD] [--size 1M] --tmpfs /tmp -- true`
/// once, as the sandbox user.
fn probe_bwrap(
    bwrap: &Path,
    base: &[OsString],
    size: bool,
    filter: Option<&[u8]>,
    drop_to: Option<(u32, u32)>,
) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(base);
    let fd = match filter {
        Some(p) => Some(seccomp::program_fd(p).map_err(|e| format!("seccomp pipe: {e}"))?),
        None => None,
    };
    if let Some(fd) = &fd {
        cmd.arg("--seccomp").arg(fd.as_raw_fd().to_string());
    }
    if size {
        cmd.args(["--size", "1048576"]);
    }
    cmd.args(["--tmpfs", "/tmp", "--", "true"])
        .env_clear()
        .envs(base_env())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let setup = spawn::ChildSetup {
        cgroup_procs: Vec::new(),
        rlimits: Rlimits::default(),
        drop_to,
        no_new_privs: false,
        pdeathsig: false,
        keep_fds: fd.as_ref().map(|f| f.as_raw_fd()).into_iter().collect(),
    };
    // SAFETY: ChildSetup::apply only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    drop(fd);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn iofs_mount(&self, host_dir: &Path) -> String {
        if self.bwrap.is_some() {
            IOFS_MOUNT.to_string()
        } else {
            host_dir.to_string_lossy().into_owned()
        }
    }

    fn handles(&self, image: &str) -> bool {
        image.starts_with(FILE_SCHEME)
    }

    async fn check_image(&self, image: &str) -> Result<(), DriverError> {
        self.resolve_async(image).await.map(|_| ())
    }

    async fn start(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, DriverError> {
        if !valid_id(&spec.id) {
            return Err(DriverError::Internal(format!(
                "invalid instance id {:?}",
                spec.id
            )));
        }
        let (dir, fy) = self.resolve_async(&spec.image).await?;
        let argv = fy.argv()?;
        if let (Some(iofs), Some((uid, gid))) = (&spec.iofs_dir, self.drop_to)
            && let Some(why) = image::access_problem(iofs, uid, gid)
        {
            return Err(DriverError::Internal(format!(
                "iofs directory unusable by the function's uid: {why}"
            )));
        }

        if let Some(launcher) = self
            .pool
            .as_ref()
            // A prebuilt sandbox cannot exec an argv[0] with a `=`.
            .filter(|p| p.root().is_none() || pool::exec_through_env(&argv))
            .and_then(|p| p.take(p.key(spec.memory_mb)))
        {
            match self.start_pooled(launcher, &spec, &dir, &argv) {
                Ok(inst) => return Ok(inst),
                Err((e, l)) => {
                    tracing::warn!(instance = %spec.id, error = %e, "pooled launcher failed, starting directly");
                    // Its cgroup may have the instance's name already: gone
                    // before the direct start makes that one (killing and
                    // removing can wait a little: off the async workers).
                    let _ = tokio::task::spawn_blocking(move || pool::discard_now(*l)).await;
                }
            }
        }

        let cg = match &self.cgroups {
            Some(c) => Some(Arc::new(
                c.create(&spec.id, spec.memory_mb, self.config.max_pids)
                    .map_err(|e| {
                        DriverError::Internal(format!("cannot create cgroup for {}: {e}", spec.id))
                    })?,
            )),
            None => None,
        };
        // Removes the cgroup (and whatever got into it) on every way out of
        // here but success, including this future being dropped.
        let mut guard = CgroupGuard(cg.clone());

        let seccomp_fd = match (&self.bwrap, &self.seccomp) {
            (Some(_), Some(p)) => match seccomp::program_fd(p) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    guard.cleanup_now();
                    return Err(DriverError::Internal(format!("seccomp pipe: {e}")));
                }
            },
            _ => None,
        };
        let raw_seccomp_fd = seccomp_fd.as_ref().map(|f| {
            use std::os::fd::AsRawFd;
            f.as_raw_fd()
        });
        let handshake = match (&self.bwrap, self.network) {
            (Some(_), NetworkMode::Private) => match net::Handshake::new() {
                Ok(h) => Some(h),
                Err(e) => {
                    guard.cleanup_now();
                    return Err(DriverError::Internal(format!("network pipes: {e}")));
                }
            },
            _ => None,
        };
        let mut cmd = match &self.bwrap {
            Some(bwrap) => {
                let mut c = tokio::process::Command::new(bwrap);
                c.args(self.bwrap_args(&spec, &dir, raw_seccomp_fd, handshake.as_ref()))
                    .args(&argv);
                c.current_dir("/");
                c
            }
            None => {
                // Unsandboxed there is no /function: words naming a path in
                // it (Fn's `/function/func.py`) name the host directory.
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| match a.strip_prefix(FUNCTION_MOUNT) {
                        Some("") => dir.display().to_string(),
                        Some(rest) if rest.starts_with('/') => format!("{}{rest}", dir.display()),
                        _ => a.clone(),
                    })
                    .collect();
                let prog = Path::new(&argv[0]);
                let prog = if prog.is_relative() && argv[0].contains('/') {
                    dir.join(prog)
                } else {
                    prog.to_path_buf()
                };
                let mut c = tokio::process::Command::new(prog);
                c.args(&argv[1..]);
                c.current_dir(&dir);
                c
            }
        };
        cmd.env_clear()
            .envs(base_env())
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let keep: Vec<i32> = raw_seccomp_fd
            .into_iter()
            .chain(handshake.iter().flat_map(|h| h.child_fds()))
            .collect();
        let setup = self.child_setup(cg.as_deref(), keep);
        // SAFETY: ChildSetup::apply only makes async-signal-safe system calls
        // on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || setup.apply());
        }

        let spawned = spawn::on_spawner_thread(move || {
            let r = cmd.spawn();
            // The child has its copies; ours close now.
            drop(seccomp_fd);
            r.map(|c| (c, handshake.map(net::Handshake::parent_ends)))
        })
        .await;
        let (child, ends) = match spawned {
            Some(Ok(c)) => c,
            other => {
                let e = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "spawner failed".to_string(),
                };
                guard.cleanup_now();
                return Err(DriverError::Internal(format!(
                    "cannot start {}: {e}",
                    argv[0]
                )));
            }
        };
        let network = match ends {
            Some((info, block)) => match self.attach_network(info, block).await {
                Ok(p) => Some(p),
                Err(e) => {
                    // The sandbox dies with its process (kill on drop).
                    drop(child);
                    guard.cleanup_now();
                    return Err(DriverError::Internal(format!(
                        "cannot set up the network of {}: {e}",
                        spec.id
                    )));
                }
            },
            None => None,
        };
        let pid = child.id().unwrap_or(0) as i32;
        tracing::debug!(instance = %spec.id, pid, dir = %dir.display(), "process instance started");
        guard.0 = None;
        Ok(make_instance(
            child,
            cg,
            spec.id,
            Belongings {
                mounts: None,
                network,
            },
        ))
    }

    async fn cleanup_leftovers(&self) -> Result<(), DriverError> {
        let Some(cg) = self.cgroups.clone() else {
            if let Some(p) = &self.pool {
                p.start_filling();
            }
            return Ok(());
        };
        // Our own waiting launchers are not leftovers.
        let keep = self.pool.as_ref().map(|p| p.names()).unwrap_or_default();
        let root = self
            .pool
            .as_ref()
            .and_then(|p| p.root())
            .map(Path::to_path_buf);
        let parent = self.config.cgroup_parent.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let n = cg.cleanup_all(&keep);
            match root {
                // Ours, but for the waiting sandboxes' directories.
                Some(root) => pool::cleanup_dirs(&root, &keep),
                // A crashed predecessor's prebuilt sandboxes' mounts.
                None => pool::cleanup_root(&pool::root_path(&parent)),
            }
            n
        })
        .await
        .map_err(|e| DriverError::Internal(format!("leftover cleanup failed: {e}")))?;
        if removed > 0 {
            tracing::info!(removed, "removed leftover instance cgroups");
        }
        // Fill the pool only now: the cleanup would have removed it.
        if let Some(p) = &self.pool {
            p.start_filling();
        }
        Ok(())
    }

    async fn shutdown(&self) {
        // Else the filler may make a launcher (and its cgroup) while the
        // server removes its cgroup parent.
        if let Some(p) = &self.pool {
            let _ = tokio::task::spawn_blocking(p.shutdown_fn()).await;
        }
    }

    async fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": true,
            "driver": "process",
            "sandbox": if self.bwrap.is_some() { "bwrap" } else { "none" },
            "unsandboxed": self.bwrap.is_none(),
            "bwrap": self.bwrap.as_ref().map(|p| p.display().to_string()),
            "cgroups": self.cgroups.as_ref().map(|c| c.version.as_str()),
            "network": self.network.as_str(),
            "uid": self.drop_to.map(|d| d.0),
            "seccomp": self.seccomp.is_some(),
            "pool": self.pool.as_ref().map(|p| serde_json::json!({
                "size": p.target(),
                "idle": p.idle(),
                "prebuilt": p.root().is_some(),
            })),
            "warnings": self.warnings,
        })
    }
}

/// What an instance owns besides its process and cgroup, released when it
/// ends.
struct Belongings {
    /// A prebuilt sandbox's mount directory.
    mounts: Option<PathBuf>,
    /// Its private network.
    network: Option<net::Pasta>,
}

/// The instance of a spawned child (sandbox or function) and its reaper.
fn make_instance(
    mut child: tokio::process::Child,
    cg: Option<Arc<cgroup::InstanceCgroup>>,
    id: String,
    belongings: Belongings,
) -> Box<dyn Instance> {
    let io = InstanceIo {
        stdin: child
            .stdin
            .take()
            .map(|s| Box::pin(s) as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>),
        stdout: Box::pin(child.stdout.take().expect("stdout is piped")),
        stderr: Box::pin(child.stderr.take().expect("stderr is piped")),
    };
    let pid = child.id().unwrap_or(0) as i32;
    let kill = Arc::new(Notify::new());
    let (tx, rx) = watch::channel(None);
    tokio::spawn(reap(
        child,
        pid,
        cg.clone(),
        kill.clone(),
        tx,
        id.clone(),
        belongings,
    ));
    Box::new(ProcessInstance {
        id,
        io: std::sync::Mutex::new(Some(io)),
        exit: rx,
        kill,
        cgroup: cg,
    })
}

/// Removes an instance cgroup unless disarmed (`.0 = None`).
struct CgroupGuard(Option<Arc<cgroup::InstanceCgroup>>);

impl CgroupGuard {
    /// Clean up now, on this thread (quick when nothing runs in it).
    fn cleanup_now(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.kill_all(Vec::new());
            let _ = cg.remove();
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let Some(cg) = self.0.take() else {
            return;
        };
        let work = move || {
            let _ = cg.kill_all(Vec::new());
            let _ = cg.remove();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }
}

/// Waits for the child, then collects the OOM flag, kills whatever is left
/// in the cgroup, removes it and publishes the exit.
async fn reap(
    mut child: tokio::process::Child,
    pgid: i32,
    cg: Option<Arc<cgroup::InstanceCgroup>>,
    kill: Arc<Notify>,
    tx: watch::Sender<Option<ExitInfo>>,
    id: String,
    belongings: Belongings,
) {
    let Belongings { mounts, network } = belongings;
    // Pids seen in the cgroup when killing, to wait for their exit.
    let mut seen = Vec::new();
    let status = tokio::select! {
        s = child.wait() => s,
        _ = kill.notified() => {
            let _ = child.start_kill();
            if let Some(cg) = &cg {
                seen = cg.pids();
                cg.kill_once();
            } else if pgid > 0 {
                // SAFETY: kill(2) has no memory-safety requirements.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            child.wait().await
        }
    };
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(-1)
        }
        Err(e) => {
            tracing::warn!(instance = %id, error = %e, "cannot wait for process");
            -1
        }
    };
    let mut oom_killed = false;
    if let Some(cg) = cg {
        let id2 = id.clone();
        let mounts = mounts.clone();
        let res = tokio::task::spawn_blocking(move || {
            // The sandbox's network goes with it.
            drop(network);
            let oom = cg.oom_killed();
            let alive = cg.kill_all(seen);
            if let Some(d) = &mounts {
                pool::remove_launch_dir(d);
            }
            (oom, alive, cg.remove())
        })
        .await;
        match res {
            Ok((oom, alive, removed)) => {
                oom_killed = oom;
                if !alive.is_empty() {
                    tracing::warn!(instance = %id2, pids = ?alive, "processes survive SIGKILL");
                }
                if let Err(e) = removed {
                    tracing::warn!(instance = %id2, error = %e, "cannot remove cgroup");
                }
            }
            Err(e) => tracing::warn!(instance = %id2, error = %e, "cgroup cleanup failed"),
        }
    } else if pgid > 0 {
        // Without a cgroup: the child's process group (what an unsandboxed
        // function left, or a sandbox child caught mid-setup).
        // SAFETY: kill(2) has no memory-safety requirements.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = tokio::task::spawn_blocking(move || {
            drop(network);
            if let Some(d) = mounts {
                pool::remove_launch_dir(&d);
            }
        })
        .await;
    }
    let info = ExitInfo { code, oom_killed };
    tracing::debug!(instance = %id, code, oom_killed, "process instance ended");
    let _ = tx.send(Some(info));
}

/// A running process instance.
pub struct ProcessInstance {
    id: String,
    /// In a mutex only to make the instance `Sync` (the streams are not);
    /// reached through `&mut self`, so never contended.
    io: std::sync::Mutex<Option<InstanceIo>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    kill: Arc<Notify>,
    cgroup: Option<Arc<cgroup::InstanceCgroup>>,
}

impl ProcessInstance {
    /// The instance's cgroup directories (empty without cgroups); gone once
    /// [`Instance::wait`] has returned.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroup
            .as_ref()
            .map(|c| c.dirs().to_vec())
            .unwrap_or_default()
    }

    /// The pids currently in the instance's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.cgroup.as_ref().map(|c| c.pids()).unwrap_or_default()
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        // Nothing outlives its instance: the reaper kills and cleans up.
        if self.exit.borrow().is_none() {
            self.kill.notify_one();
        }
    }
}

#[async_trait]
impl Instance for ProcessInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn take_io(&mut self) -> Option<InstanceIo> {
        self.io
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.unwrap_or_default(),
            // The reaper is gone (runtime shutting down): the child was
            // killed on drop.
            Err(_) => ExitInfo {
                code: 137,
                oom_killed: false,
            },
        }
    }

    async fn destroy(&self) {
        if self.exit.borrow().is_none() {
            self.kill.notify_one();
        }
        self.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_lists() {
        assert_eq!("".parse::<SandboxMode>().unwrap(), SandboxMode::Auto);
        assert_eq!("BWRAP".parse::<SandboxMode>().unwrap(), SandboxMode::Bwrap);
        assert_eq!("none".parse::<SandboxMode>().unwrap(), SandboxMode::None);
        assert!("docker".parse::<SandboxMode>().is_err());
        assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
        assert_eq!(
            "shared".parse::<NetworkMode>().unwrap(),
            NetworkMode::Shared
        );
        assert!("bridge".parse::<NetworkMode>().is_err());
        assert_eq!(
            parse_path_list(" /a:/b c::"),
            vec![PathBuf::from("/a"), PathBuf::from("/b c")]
        );
        assert!(valid_id("01M8A61GT6FW00008ZJ0000017"));
        assert!(valid_id("a-b_c"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
    }

    #[test]
    fn config_from_lookup() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            ProcessDriverConfig::from_lookup(env(&[])).unwrap(),
            ProcessDriverConfig::default()
        );
        let c = ProcessDriverConfig::from_lookup(env(&[
            (ENV_SANDBOX, "none"),
            (ENV_NETWORK, "none"),
            (ENV_ROOTS, "/srv/fns:/opt/fns"),
            (ENV_MAX_PIDS, "10"),
            (ENV_UID, "1000"),
            (ENV_GID, "1001"),
            (ENV_TMP_SIZE_MB, "16"),
            (ENV_CGROUP_PARENT, "fnrs-a"),
            (ENV_SECCOMP, "false"),
            (ENV_MAX_OPEN_FILES, "-1"),
            (ENV_MAX_LOCKED_MEMORY, "1024"),
            (ENV_POOL_SIZE, "0"),
        ]))
        .unwrap();
        assert_eq!(c.sandbox, SandboxMode::None);
        assert_eq!(c.network, NetworkMode::None);
        assert_eq!(
            c.roots,
            [PathBuf::from("/srv/fns"), PathBuf::from("/opt/fns")]
        );
        assert_eq!(
            (c.max_pids, c.uid, c.gid, c.tmp_size_mb),
            (10, 1000, 1001, 16)
        );
        assert_eq!(c.cgroup_parent, "fnrs-a");
        assert_eq!(c.pool_size, 0);
        assert_eq!(ProcessDriverConfig::default().pool_size, 4);
        assert!(!c.seccomp);
        assert_eq!(c.rlimits.nofile, None);
        assert_eq!(c.rlimits.memlock, Some(1024));
        assert_eq!(c.rlimits.sigpending, Some(5000));
        let e = ProcessDriverConfig::from_lookup(env(&[(ENV_MAX_PIDS, "lots")])).unwrap_err();
        assert!(e.contains(ENV_MAX_PIDS), "{e}");
        let e = ProcessDriverConfig::from_lookup(env(&[(ENV_POOL_SIZE, "-1")])).unwrap_err();
        assert!(e.contains(ENV_POOL_SIZE), "{e}");
        let e = ProcessDriverConfig::from_lookup(env(&[(ENV_SANDBOX, "docker")])).unwrap_err();
        assert!(e.contains(ENV_SANDBOX), "{e}");
    }
}
