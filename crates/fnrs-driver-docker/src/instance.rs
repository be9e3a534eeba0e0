//! A running container: its attached streams, the wait for its exit, and
//! its removal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use fnrs_driver::{DriverError, ExitInfo, Instance, InstanceIo, InstanceSpec};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::NetworkLease;

/// Force-remove a container with its volumes; gone already is fine.
pub(crate) async fn force_remove(docker: &Docker, name: &str) -> Result<(), BollardError> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // 409: removal already in progress.
        Err(BollardError::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Owns a container from before its create request until it is removed:
/// dropped while armed, it removes the container in a spawned task (Drop is
/// sync). Engine requests on the container go through [`ContainerGuard::run`],
/// which finishes them even when the caller is dropped, and removal waits
/// for them: a create or start still under way cannot outlive the guard.
pub(crate) struct ContainerGuard {
    docker: Docker,
    id: String,
    /// Held by each engine request on the container and by its removal.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// The driver's background tasks, awaited at its shutdown.
    tasks: TaskTracker,
    armed: AtomicBool,
}

impl ContainerGuard {
    /// A guard of the container named `id` (which may not exist yet).
    pub(crate) fn new(docker: Docker, id: String, tasks: TaskTracker) -> Self {
        Self {
            docker,
            id,
            busy: Arc::new(tokio::sync::Mutex::new(())),
            tasks,
            armed: AtomicBool::new(true),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Run an engine request on the container in a task of its own, so that
    /// it completes (and removal waits for it) even if this call is dropped.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        request: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, DriverError> {
        let busy = Arc::clone(&self.busy).lock_owned().await;
        let task = self.tasks.spawn(async move {
            let r = request.await;
            drop(busy);
            r
        });
        match task.await {
            Ok(r) => Ok(r),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(DriverError::Internal(
                "engine request cancelled (runtime shutting down)".into(),
            )),
        }
    }

    /// SIGKILL the container (its waiter sees the exit) and force-remove it
    /// (a few attempts), once requests under way are done; disarms the guard
    /// once it is gone.
    pub(crate) async fn end(&self) {
        let _busy = self.busy.lock().await;
        kill(&self.docker, &self.id).await;
        if remove_with_retries(&self.docker, &self.id).await {
            self.armed.store(false, Ordering::Release);
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !*self.armed.get_mut() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // The next start's cleanup_leftovers removes it.
            tracing::warn!(container = %self.id, "container left: no runtime to remove it");
            return;
        };
        let (docker, id, busy) = (
            self.docker.clone(),
            std::mem::take(&mut self.id),
            Arc::clone(&self.busy),
        );
        self.tasks.spawn_on(
            async move {
                let _busy = busy.lock().await;
                remove_with_retries(&docker, &id).await;
            },
            &rt,
        );
    }
}

/// How many containers [`end_all`] ends at once.
const END_CONCURRENCY: usize = 16;

/// SIGKILL and force-remove the containers `ids`, [`END_CONCURRENCY`] at a
/// time; returns how many could not be removed.
pub(crate) async fn end_all(docker: &Docker, ids: Vec<String>) -> usize {
    futures::stream::iter(ids)
        .map(|id| async move {
            kill(docker, &id).await;
            match force_remove(docker, &id).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "removing container failed");
                    1
                }
            }
        })
        .buffer_unordered(END_CONCURRENCY)
        .fold(0, |n, failed| async move { n + failed })
        .await
}

/// SIGKILL a container; one that is gone or not running is fine.
async fn kill(docker: &Docker, id: &str) {
    let opts = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    let _ = docker.kill_container(id, Some(opts)).await;
}

/// Force-remove `id` with up to 3 attempts; whether it is gone.
async fn remove_with_retries(docker: &Docker, id: &str) -> bool {
    for attempt in 0..3 {
        match force_remove(docker, id).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, attempt, "removing container failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    false
}

/// Attach to the container of `guard` (created from `spec`) and start it.
/// On every path that does not return the instance, the guard (and the
/// attach streams) are dropped, which removes the container. Returns the
/// instance and when the attach was done.
pub(crate) async fn launch(
    guard: ContainerGuard,
    spec: &InstanceSpec,
    network: NetworkLease,
    engine_error: impl Fn(&str, BollardError) -> DriverError,
    t0: std::time::Instant,
) -> Result<(DockerInstance, Duration), DriverError> {
    let docker = guard.docker.clone();
    let id = spec.id.clone();
    let attach_opts = AttachContainerOptionsBuilder::default()
        .stdin(spec.stdin)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(false)
        .build();
    let attached = docker
        .attach_container(&id, Some(attach_opts))
        .await
        .map_err(|e| engine_error("attaching container", e))?;
    let t_attach = t0.elapsed();
    // Wait is set up before start so that a fast exit is not missed.
    let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
    let (out_w, out_r) = tokio::io::duplex(64 * 1024);
    let (err_w, err_r) = tokio::io::duplex(64 * 1024);
    // Aborted (closing the attach stream) if this start goes no further.
    let demux = AbortOnDropHandle::new(tokio::spawn(demultiplex(attached.output, out_w, err_w)));
    let started = {
        let (docker, id) = (docker.clone(), id.clone());
        guard
            .run(async move { docker.start_container(&id, None).await })
            .await?
    };
    if let Err(e) = started {
        let e = match e {
            BollardError::DockerResponseServerError { message, .. }
                if spec.syslog_url.is_some() && message.contains("logging driver") =>
            {
                DriverError::Syslog(message)
            }
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } if status_code < 500 || !message.is_empty() => {
                DriverError::Internal(format!("starting container: {message}"))
            }
            e => engine_error("starting container", e),
        };
        return Err(e);
    }
    let waiter = AbortOnDropHandle::new(tokio::spawn(async move {
        let info = wait_exit(&docker, &id).await;
        let _ = exit_tx.send(Some(info));
    }));
    let stdin: Option<Pin<Box<dyn AsyncWrite + Send>>> = if spec.stdin {
        Some(attached.input)
    } else {
        None
    };
    let inst = DockerInstance {
        container: guard,
        io: Mutex::new(Some(InstanceIo {
            stdin,
            stdout: Box::pin(out_r),
            stderr: Box::pin(err_r),
        })),
        exit: exit_rx,
        _tasks: [demux, waiter],
        destroyed: tokio::sync::Mutex::new(false),
        _network: network,
    };
    Ok((inst, t_attach))
}

/// Copy the attach stream's frames to the stdout and stderr pipes. A pipe
/// whose reader is gone is skipped; the other goes on.
async fn demultiplex(
    mut output: Pin<Box<dyn futures::Stream<Item = Result<LogOutput, BollardError>> + Send>>,
    out: DuplexStream,
    err: DuplexStream,
) {
    let mut out = Some(out);
    let mut err = Some(err);
    while let Some(item) = output.next().await {
        let (sink, bytes) = match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                (&mut out, message)
            }
            Ok(LogOutput::StdErr { message }) => (&mut err, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "attach stream ended");
                break;
            }
        };
        if let Some(w) = sink
            && w.write_all(&bytes).await.is_err()
        {
            *sink = None;
        }
    }
    for w in [out, err].into_iter().flatten() {
        let mut w = w;
        let _ = w.shutdown().await;
    }
}

/// How long one wait request may take (a hot container lives for hours).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Wait for the container to stop; code from wait, OOM from inspect.
async fn wait_exit(docker: &Docker, id: &str) -> ExitInfo {
    // The engine answers a wait only when the container stops, so the
    // client's per-request timeout must not apply to it.
    let waiter = docker.clone().with_timeout(WAIT_TIMEOUT);
    let mut code = -1;
    // Each round re-waits after a transport failure while the container
    // still runs; bounded so that a broken engine cannot spin forever.
    for _ in 0..1000 {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match waiter.wait_container(id, Some(opts)).next().await {
            Some(Ok(r)) => {
                code = r.status_code as i32;
                break;
            }
            Some(Err(BollardError::DockerContainerWaitError { code: c, .. })) => {
                code = c as i32;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(container = %id, error = %e, "wait failed");
                let running = docker
                    .inspect_container(id, None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                if !running {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => break,
        }
    }
    let mut oom_killed = false;
    if let Ok(info) = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        && let Some(state) = info.state
    {
        oom_killed = state.oom_killed.unwrap_or(false);
        if code < 0
            && let Some(c) = state.exit_code
        {
            code = c as i32;
        }
    }
    if code < 0 {
        // Gone without a status (removed): report a kill.
        code = 137;
    }
    ExitInfo { code, oom_killed }
}

/// A running container. Dropped without [`Instance::destroy`], its guard
/// removes the container; its tasks are aborted.
pub(crate) struct DockerInstance {
    container: ContainerGuard,
    io: Mutex<Option<InstanceIo>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    /// The demultiplexer and the waiter.
    _tasks: [AbortOnDropHandle<()>; 2],
    destroyed: tokio::sync::Mutex<bool>,
    _network: NetworkLease,
}

#[async_trait]
impl Instance for DockerInstance {
    fn id(&self) -> &str {
        self.container.id()
    }

    fn take_io(&mut self) -> Option<InstanceIo> {
        self.io.get_mut().take()
    }

    async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        let seen = rx.wait_for(|v| v.is_some()).await.ok().and_then(|v| *v);
        // Without a value the waiter task is gone (destroyed before the exit
        // was seen): a kill.
        seen.unwrap_or(ExitInfo {
            code: 137,
            oom_killed: false,
        })
    }

    async fn destroy(&self) {
        let mut done = self.destroyed.lock().await;
        if *done {
            return;
        }
        // No waiting for the exit in between: the waiter sees the kill (or
        // the removal) by itself, and wait() reports 137 either way.
        self.container.end().await;
        *done = true;
    }
}
