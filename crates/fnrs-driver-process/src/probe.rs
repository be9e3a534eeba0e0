//! What the machine can do: find bwrap and try it (dropping what an older
//! bwrap or kernel lacks), and whether pasta gives a private network.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use fnrs_driver::DriverError;

use crate::config::{ENV_NETWORK, ENV_PASTA, ENV_SANDBOX, ENV_SECCOMP};
use crate::{
    NetworkMode, ProcessDriverConfig, Rlimits, SandboxMode, base_env, net, seccomp, spawn,
};

/// The sandbox found at start.
pub(crate) struct Sandbox {
    /// The bwrap binary when sandboxing, `None` when unsandboxed.
    pub(crate) bwrap: Option<PathBuf>,
    /// Namespaces and system directories of every sandbox.
    pub(crate) base_args: Vec<OsString>,
    /// bwrap supports `--size`.
    pub(crate) tmp_size: bool,
    /// The seccomp program, when in use.
    pub(crate) seccomp: Option<Vec<u8>>,
}

/// Find bwrap and try it once as the sandbox user, down a ladder of
/// options an older bwrap or kernel may lack; warnings say what was dropped.
/// `Err(Unavailable)` when `sandbox` is `bwrap` and none works. Blocking.
pub(crate) fn sandbox(
    config: &ProcessDriverConfig,
    drop_to: Option<(u32, u32)>,
    warnings: &mut Vec<String>,
) -> Result<Sandbox, DriverError> {
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
    Ok(Sandbox {
        bwrap,
        base_args,
        tmp_size,
        seccomp,
    })
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

/// The network functions get for the configured mode, and pasta when
/// private; `Err` is the warning when it cannot be had (then `none` in a
/// sandbox, never `shared` silently). Blocking (a private network is tried
/// once on a sandbox).
pub(crate) fn effective_network(
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
