//! An instance: spawning it (directly, or through a pooled launcher), its
//! reaper, and waiting for and destroying it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use fnrs_driver::{DriverError, ExitInfo, IOFS_MOUNT, Instance, InstanceIo, InstanceSpec};
use tokio::sync::{Notify, watch};

use crate::{
    FUNCTION_MOUNT, NetworkMode, ProcessDriver, base_env, cgroup, net, pool, seccomp, spawn,
};

impl ProcessDriver {
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

    /// Start an instance by spawning bwrap (or the function) now: a fresh
    /// cgroup joined before exec, then the private network if any.
    pub(crate) async fn start_direct(
        &self,
        spec: InstanceSpec,
        dir: &Path,
        argv: &[String],
    ) -> Result<Box<dyn Instance>, DriverError> {
        // mkdir and limit writes in cgroupfs: off the async workers.
        let cg = match &self.cgroups {
            Some(c) => {
                let (c, id, mb, pids) = (
                    c.clone(),
                    spec.id.clone(),
                    spec.memory_mb,
                    self.config.max_pids,
                );
                let made = tokio::task::spawn_blocking(move || c.create(&id, mb, pids))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(|e| {
                        DriverError::Internal(format!("cannot create cgroup for {}: {e}", spec.id))
                    })?;
                Some(Arc::new(made))
            }
            None => None,
        };
        // Removes the cgroup (and whatever got into it) on every way out of
        // here but success, including this future being dropped.
        let mut guard = CgroupGuard(cg.clone());

        let seccomp_fd = match (&self.bwrap, &self.seccomp) {
            (Some(_), Some(p)) => match seccomp::program_fd(p) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    drop(guard);
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
                    drop(guard);
                    return Err(DriverError::Internal(format!("network pipes: {e}")));
                }
            },
            _ => None,
        };
        let mut cmd = match &self.bwrap {
            Some(bwrap) => {
                let mut c = tokio::process::Command::new(bwrap);
                c.args(self.bwrap_args(&spec, dir, raw_seccomp_fd, handshake.as_ref()))
                    .args(argv);
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
                c.current_dir(dir);
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
                drop(guard);
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
                    drop(guard);
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
    /// Start an instance with a waiting launcher: its cgroup becomes the
    /// instance's (renamed to the id, memory limit set), then it gets
    /// bwrap's command line. On error the launcher comes back, unusable:
    /// [`pool::discard_now`] it (its cgroup may have the instance's name).
    pub(crate) async fn start_pooled(
        &self,
        l: pool::Launcher,
        spec: &InstanceSpec,
        dir: &Path,
        argv: &[String],
    ) -> Result<Box<dyn Instance>, (String, Option<Box<pool::Launcher>>)> {
        let Some(bwrap) = &self.bwrap else {
            return Err(("no bwrap".into(), Some(Box::new(l))));
        };
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
        let args = (!l.prebuilt()).then(|| {
            let mut args: Vec<OsString> = vec![bwrap.as_os_str().to_owned(), "--clearenv".into()];
            for (k, v) in &env {
                args.push("--setenv".into());
                args.push(k.into());
                args.push(v.into());
            }
            args.extend(self.bwrap_args(spec, dir, l.seccomp_fd, None));
            args.extend(argv.iter().map(OsString::from));
            args
        });
        // Renaming the cgroup, setting its limit, the mounts and the pipe
        // write touch the kernel's file systems: off the async workers.
        let (id, memory_mb, iofs) = (spec.id.clone(), spec.memory_mb, spec.iofs_dir.clone());
        let (dir2, argv2) = (dir.to_path_buf(), argv.to_vec());
        let prepared = tokio::task::spawn_blocking(move || {
            let mut l = l;
            let r = (|| {
                if let Some(cg) = l.cgroup_mut() {
                    cg.rename(&id)
                        .and_then(|()| cg.set_memory(memory_mb))
                        .map_err(|e| format!("cgroup: {e}"))?;
                }
                match &args {
                    None => l.run(&dir2, iofs.as_deref(), &env, &argv2),
                    Some(args) => l.launch(args),
                }
                .map_err(|e| format!("launcher: {e}"))
            })();
            (l, r)
        })
        .await;
        let l = match prepared {
            Ok((l, Ok(()))) => l,
            Ok((l, Err(e))) => return Err((e, Some(Box::new(l)))),
            // The launcher went with the panicked task (its drop cleans up).
            Err(e) => return Err((format!("launcher task: {e}"), None)),
        };
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
                // Reads and writes in cgroupfs: off the async workers.
                let cg = Arc::clone(cg);
                seen = tokio::task::spawn_blocking(move || {
                    let seen = cg.pids();
                    cg.kill_once();
                    seen
                })
                .await
                .unwrap_or_default();
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
