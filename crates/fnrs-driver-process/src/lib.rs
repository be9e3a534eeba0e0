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
//!   directory. Network ([`ENV_NETWORK`]): by default a private namespace
//!   with outbound traffic through pasta, or one with only `lo` (`none`), or
//!   the host's (`shared`). A seccomp filter ([`ENV_SECCOMP`])
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
mod config;
mod funcyaml;
mod image;
mod instance;
mod net;
mod pool;
mod probe;
mod seccomp;
mod spawn;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fnrs_driver::{Driver, DriverError, IOFS_MOUNT, Instance, InstanceSpec};

pub use cgroup::CgroupVersion;
pub use config::*;
pub use funcyaml::{FUNC_YAML, FuncYaml, read_func_yaml, split_command};
pub use image::{FILE_SCHEME, image_path};
pub use instance::ProcessInstance;
pub use spawn::Rlimits;

/// The `PATH` given to functions unless their env sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the function directory appears inside the sandbox.
pub const FUNCTION_MOUNT: &str = "/function";

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

        let probe::Sandbox {
            bwrap,
            base_args,
            tmp_size,
            seccomp,
        } = probe::sandbox(&config, drop_to, &mut warnings)?;
        let (network, pasta) =
            probe::effective_network(&config, bwrap.as_deref(), &base_args, drop_to);
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
        self.resolve_for_start(image, None).await
    }

    /// [`ProcessDriver::resolve_async`], and in the same blocking task the
    /// check that the sandbox user can use the instance's iofs directory.
    async fn resolve_for_start(
        &self,
        image: &str,
        iofs: Option<PathBuf>,
    ) -> Result<(PathBuf, FuncYaml), DriverError> {
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
            if let (Ok(_), Some(iofs), Some((uid, gid))) = (&r, iofs, drop_to)
                && let Some(why) = image::access_problem(&iofs, uid, gid)
            {
                return Err(DriverError::Internal(format!(
                    "iofs directory unusable by the function's uid: {why}"
                )));
            }
            r
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(DriverError::Internal(format!("resolving {image:?}: {e}"))),
            Err(_) => Err(slow()),
        }
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
        let (dir, fy) = self
            .resolve_for_start(&spec.image, spec.iofs_dir.clone())
            .await?;
        let argv = fy.argv()?;

        if let Some(launcher) = self
            .pool
            .as_ref()
            // A prebuilt sandbox cannot exec an argv[0] with a `=`.
            .filter(|p| p.root().is_none() || pool::exec_through_env(&argv))
            .and_then(|p| p.take(p.key(spec.memory_mb)))
        {
            match self.start_pooled(launcher, &spec, &dir, &argv).await {
                Ok(inst) => return Ok(inst),
                Err((e, l)) => {
                    tracing::warn!(instance = %spec.id, error = %e, "pooled launcher failed, starting directly");
                    // Its cgroup may have the instance's name already: gone
                    // before the direct start makes that one (killing and
                    // removing can wait a little: off the async workers).
                    if let Some(l) = l {
                        let _ = tokio::task::spawn_blocking(move || pool::discard_now(*l)).await;
                    }
                }
            }
        }

        self.start_direct(spec, &dir, &argv).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        assert!(valid_id("01M8A61GT6FW00008ZJ0000017"));
        assert!(valid_id("a-b_c"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(""));
    }
}
