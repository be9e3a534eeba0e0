//! The driver's settings: one constant per environment variable, beside
//! its parser, and the typed [`ProcessDriverConfig`] they are parsed into.

use std::path::PathBuf;
use std::str::FromStr;

use crate::spawn::Rlimits;

/// `FN_PROCESS_SANDBOX`: `auto` (default: bwrap when it works, else
/// unsandboxed with a warning), `bwrap` (refuse to start without it), `none`.
pub const ENV_SANDBOX: &str = "FN_PROCESS_SANDBOX";
/// Parses [`ENV_SANDBOX`].
pub fn parse_sandbox(v: &str) -> Result<SandboxMode, String> {
    v.parse()
}

/// `FN_PROCESS_NETWORK`: `private` (default: the sandbox's own namespace
/// with outbound network through pasta, the host's loopback not reachable),
/// `none` (only `lo`) or `shared` (the host's network, the server's API on
/// loopback included: an explicit opt-in, warned about).
pub const ENV_NETWORK: &str = "FN_PROCESS_NETWORK";
/// Parses [`ENV_NETWORK`].
pub fn parse_network(v: &str) -> Result<NetworkMode, String> {
    v.parse()
}

/// `FN_PROCESS_PASTA`: absolute path of the `pasta` binary (Debian's
/// `passt`) for the private network. Default: the first of
/// `/usr/bin/pasta`, `/usr/local/bin/pasta`, `/bin/pasta` that exists.
pub const ENV_PASTA: &str = "FN_PROCESS_PASTA";
/// Parses [`ENV_PASTA`].
pub fn parse_pasta(v: &str) -> Result<PathBuf, String> {
    absolute(ENV_PASTA, v)
}

/// `FN_PROCESS_BWRAP`: absolute path of the `bwrap` binary. Default: the
/// first of `/usr/local/bin/bwrap`, `/usr/bin/bwrap`, `/bin/bwrap` that
/// exists.
pub const ENV_BWRAP: &str = "FN_PROCESS_BWRAP";
/// Parses [`ENV_BWRAP`].
pub fn parse_bwrap(v: &str) -> Result<PathBuf, String> {
    absolute(ENV_BWRAP, v)
}

/// `FN_PROCESS_ROOTS`: `:`-separated absolute directories; when set, only
/// directories under one of them may be `file://` images. Default: any.
pub const ENV_ROOTS: &str = "FN_PROCESS_ROOTS";
/// Parses [`ENV_ROOTS`].
pub fn parse_roots(v: &str) -> Result<Vec<PathBuf>, String> {
    absolute_list(ENV_ROOTS, v)
}

/// `FN_PROCESS_RO_PATHS`: `:`-separated absolute host paths bound
/// read-only at the same path in the sandbox (runtimes outside `/usr`, e.g.
/// a venv in `/opt`).
pub const ENV_RO_PATHS: &str = "FN_PROCESS_RO_PATHS";
/// Parses [`ENV_RO_PATHS`].
pub fn parse_ro_paths(v: &str) -> Result<Vec<PathBuf>, String> {
    absolute_list(ENV_RO_PATHS, v)
}

/// `FN_MAX_PIDS`: the pids limit of an instance (default 50, as Fn).
pub const ENV_MAX_PIDS: &str = "FN_MAX_PIDS";
/// Parses [`ENV_MAX_PIDS`].
pub fn parse_max_pids(v: &str) -> Result<u32, String> {
    count(ENV_MAX_PIDS, v)
}

/// `FN_PROCESS_UID`: the uid functions run as when the server is root
/// (default 65534).
pub const ENV_UID: &str = "FN_PROCESS_UID";
/// Parses [`ENV_UID`].
pub fn parse_uid(v: &str) -> Result<u32, String> {
    count(ENV_UID, v)
}

/// `FN_PROCESS_GID`: the gid functions run as when the server is root
/// (default 65534).
pub const ENV_GID: &str = "FN_PROCESS_GID";
/// Parses [`ENV_GID`].
pub fn parse_gid(v: &str) -> Result<u32, String> {
    count(ENV_GID, v)
}

/// `FN_PROCESS_TMP_SIZE_MB`: size of the private `/tmp` in MiB; 0 (default)
/// means the fn's memory (tmpfs pages count against the memory limit anyway).
pub const ENV_TMP_SIZE_MB: &str = "FN_PROCESS_TMP_SIZE_MB";
/// Parses [`ENV_TMP_SIZE_MB`].
pub fn parse_tmp_size_mb(v: &str) -> Result<u64, String> {
    count(ENV_TMP_SIZE_MB, v)
}

/// `FN_PROCESS_CGROUP_PARENT`: the parent cgroup (a relative path below
/// each hierarchy's root) of all instance cgroups; default `fnrs`.
/// `fnrs serve` puts each server's in `<parent>/<server id>`.
pub const ENV_CGROUP_PARENT: &str = "FN_PROCESS_CGROUP_PARENT";
/// Parses [`ENV_CGROUP_PARENT`]: plain names separated by `/`.
pub fn parse_cgroup_parent(v: &str) -> Result<String, String> {
    let p = v.trim().trim_matches('/');
    let ok = !p.is_empty()
        && std::path::Path::new(p)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(p.to_string())
    } else {
        Err(format!(
            "{ENV_CGROUP_PARENT} must be a relative cgroup path such as fnrs, not {v:?}"
        ))
    }
}

/// `FN_PROCESS_SECCOMP`: `true` (default) installs a seccomp filter in the
/// sandbox that denies (EPERM) keyrings, BPF, perf, io_uring, module, mount,
/// ptrace and clock calls and foreign ABIs (x86_64 only); `false` does not.
pub const ENV_SECCOMP: &str = "FN_PROCESS_SECCOMP";
/// Parses [`ENV_SECCOMP`].
pub fn parse_seccomp(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{ENV_SECCOMP} must be true or false, not {v:?}")),
    }
}

/// `FN_PROCESS_POOL_SIZE`: how many sandbox launchers are kept waiting,
/// each already in a fresh cgroup as the sandbox uid, so that a cold start
/// skips the fork of the server and the cgroup join (≈ 15 ms on cgroup v1).
/// Default 4; 0 turns the pool off. Only with the bwrap sandbox (bubblewrap
/// >= 0.8) and bash installed.
pub const ENV_POOL_SIZE: &str = "FN_PROCESS_POOL_SIZE";
/// Parses [`ENV_POOL_SIZE`].
pub fn parse_pool_size(v: &str) -> Result<usize, String> {
    count(ENV_POOL_SIZE, v)
}

/// `FN_MAX_OPEN_FILES`: `RLIMIT_NOFILE` (default 350, as Fn).
pub const ENV_MAX_OPEN_FILES: &str = "FN_MAX_OPEN_FILES";
/// Parses [`ENV_MAX_OPEN_FILES`] (`None`: leave the limit alone).
pub fn parse_max_open_files(v: &str) -> Result<Option<u64>, String> {
    ulimit(ENV_MAX_OPEN_FILES, v)
}

/// `FN_MAX_LOCKED_MEMORY`: `RLIMIT_MEMLOCK` in bytes (default 65536, as Fn).
pub const ENV_MAX_LOCKED_MEMORY: &str = "FN_MAX_LOCKED_MEMORY";
/// Parses [`ENV_MAX_LOCKED_MEMORY`] (`None`: leave the limit alone).
pub fn parse_max_locked_memory(v: &str) -> Result<Option<u64>, String> {
    ulimit(ENV_MAX_LOCKED_MEMORY, v)
}

/// `FN_MAX_PENDING_SIGNALS`: `RLIMIT_SIGPENDING` (default 5000, as Fn).
pub const ENV_MAX_PENDING_SIGNALS: &str = "FN_MAX_PENDING_SIGNALS";
/// Parses [`ENV_MAX_PENDING_SIGNALS`] (`None`: leave the limit alone).
pub fn parse_max_pending_signals(v: &str) -> Result<Option<u64>, String> {
    ulimit(ENV_MAX_PENDING_SIGNALS, v)
}

/// `FN_MAX_MESSAGE_QUEUE`: `RLIMIT_MSGQUEUE` in bytes (default 819200, as Fn).
pub const ENV_MAX_MESSAGE_QUEUE: &str = "FN_MAX_MESSAGE_QUEUE";
/// Parses [`ENV_MAX_MESSAGE_QUEUE`] (`None`: leave the limit alone).
pub fn parse_max_message_queue(v: &str) -> Result<Option<u64>, String> {
    ulimit(ENV_MAX_MESSAGE_QUEUE, v)
}

/// A non-negative integer.
fn count<T: FromStr>(var: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{var} must be a non-negative integer, not {v:?}"))
}

/// Fn's ulimits: an integer; negative or zero leaves the limit alone.
fn ulimit(var: &str, v: &str) -> Result<Option<u64>, String> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{var} must be an integer, not {v:?}"))?;
    Ok((n > 0).then_some(n as u64))
}

/// An absolute path.
fn absolute(var: &str, v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v.trim());
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("{var} must be an absolute path, not {v:?}"))
    }
}

/// A `:`-separated list of absolute paths (empty entries dropped).
fn absolute_list(var: &str, v: &str) -> Result<Vec<PathBuf>, String> {
    let list = parse_path_list(v);
    match list.iter().find(|p| !p.is_absolute()) {
        Some(p) => Err(format!(
            "{var} must list absolute paths, not {}",
            p.display()
        )),
        None => Ok(list),
    }
}

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
        if let Some(v) = get(ENV_SANDBOX) {
            c.sandbox = parse_sandbox(&v)?;
        }
        if let Some(v) = get(ENV_NETWORK) {
            c.network = parse_network(&v)?;
        }
        if let Some(v) = get(ENV_ROOTS) {
            c.roots = parse_roots(&v)?;
        }
        if let Some(v) = get(ENV_RO_PATHS) {
            c.ro_paths = parse_ro_paths(&v)?;
        }
        if let Some(v) = get(ENV_MAX_PIDS) {
            c.max_pids = parse_max_pids(&v)?;
        }
        if let Some(v) = get(ENV_TMP_SIZE_MB) {
            c.tmp_size_mb = parse_tmp_size_mb(&v)?;
        }
        if let Some(v) = get(ENV_UID) {
            c.uid = parse_uid(&v)?;
        }
        if let Some(v) = get(ENV_GID) {
            c.gid = parse_gid(&v)?;
        }
        if let Some(v) = get(ENV_CGROUP_PARENT) {
            c.cgroup_parent = parse_cgroup_parent(&v)?;
        }
        if let Some(v) = get(ENV_BWRAP) {
            c.bwrap = Some(parse_bwrap(&v)?);
        }
        if let Some(v) = get(ENV_PASTA) {
            c.pasta = Some(parse_pasta(&v)?);
        }
        if let Some(v) = get(ENV_POOL_SIZE) {
            c.pool_size = parse_pool_size(&v)?;
        }
        if let Some(v) = get(ENV_SECCOMP) {
            c.seccomp = parse_seccomp(&v)?;
        }
        if let Some(v) = get(ENV_MAX_OPEN_FILES) {
            c.rlimits.nofile = parse_max_open_files(&v)?;
        }
        if let Some(v) = get(ENV_MAX_LOCKED_MEMORY) {
            c.rlimits.memlock = parse_max_locked_memory(&v)?;
        }
        if let Some(v) = get(ENV_MAX_PENDING_SIGNALS) {
            c.rlimits.sigpending = parse_max_pending_signals(&v)?;
        }
        if let Some(v) = get(ENV_MAX_MESSAGE_QUEUE) {
            c.rlimits.msgqueue = parse_max_message_queue(&v)?;
        }
        Ok(c)
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
