//! A running container: its attached streams, the wait for its exit, and
//! its removal.

use std::pin::Pin;
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

/// Attach to the created container `spec.id` and start it; on error it is
/// removed. Returns the instance and when the attach was done.
pub(crate) async fn launch(
    docker: &Docker,
    spec: &InstanceSpec,
    network: NetworkLease,
    engine_error: impl Fn(&str, BollardError) -> DriverError,
    t0: std::time::Instant,
) -> Result<(DockerInstance, Duration), DriverError> {
    let id = spec.id.clone();
    // From here on, failures remove the container.
    let cleanup = |e: DriverError| {
        let docker = docker.clone();
        let id = id.clone();
        async move {
            if let Err(re) = force_remove(&docker, &id).await {
                tracing::warn!(container = %id, error = %re, "removing failed container");
            }
            e
        }
    };
    let attach_opts = AttachContainerOptionsBuilder::default()
        .stdin(spec.stdin)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(false)
        .build();
    let attached = match docker.attach_container(&id, Some(attach_opts)).await {
        Ok(a) => a,
        Err(e) => return Err(cleanup(engine_error("attaching container", e)).await),
    };
    let t_attach = t0.elapsed();
    // Wait is set up before start so that a fast exit is not missed.
    let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
    let (out_w, out_r) = tokio::io::duplex(64 * 1024);
    let (err_w, err_r) = tokio::io::duplex(64 * 1024);
    let demux = tokio::spawn(demultiplex(attached.output, out_w, err_w));
    if let Err(e) = docker.start_container(&id, None).await {
        demux.abort();
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
        return Err(cleanup(e).await);
    }
    let waiter = {
        let docker = docker.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let info = wait_exit(&docker, &id).await;
            let _ = exit_tx.send(Some(info));
        })
    };
    let stdin: Option<Pin<Box<dyn AsyncWrite + Send>>> = if spec.stdin {
        Some(attached.input)
    } else {
        None
    };
    let inst = DockerInstance {
        id,
        docker: docker.clone(),
        io: Mutex::new(Some(InstanceIo {
            stdin,
            stdout: Box::pin(out_r),
            stderr: Box::pin(err_r),
        })),
        exit: exit_rx,
        tasks: Mutex::new(vec![demux, waiter]),
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

/// A running container.
pub(crate) struct DockerInstance {
    id: String,
    docker: Docker,
    io: Mutex<Option<InstanceIo>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    destroyed: tokio::sync::Mutex<bool>,
    _network: NetworkLease,
}

#[async_trait]
impl Instance for DockerInstance {
    fn id(&self) -> &str {
        &self.id
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
        // Kill first so the waiter sees the exit and inspect still works.
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(&self.id, Some(kill)).await;
        if self.exit.borrow().is_none() {
            let mut rx = self.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| v.is_some())).await;
        }
        for attempt in 0..3 {
            match force_remove(&self.docker, &self.id).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(container = %self.id, error = %e, attempt, "removing container failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        *done = true;
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        // Dropped without destroy: remove the container in the background.
        if !*self.destroyed.get_mut()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move {
                if let Err(e) = force_remove(&docker, &id).await {
                    tracing::warn!(container = %id, error = %e, "removing dropped container failed");
                }
            });
        }
    }
}
