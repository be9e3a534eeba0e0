//! Starting a hot instance: its iofs directory, the driver's start, log
//! capture, the wait until it is ready, and its connection (contract §4.4).
//! From the driver's start on, an [`Owned`] holds it: a failure on the way
//! ends it by dropping it.

use std::collections::HashMap;
use std::sync::Arc;

use fnrs_driver::{Instance, InstanceSpec};
use fnrs_model::{App, Error, Fn};
use fnrs_protocol::{Format, HttpStreamConn, StdioConn};
use tokio::time::Instant;

use crate::Agent;
use crate::capacity::Reservation;
use crate::errors::{ERR_INIT_FAIL, ERR_INIT_TIMEOUT, driver_error};
use crate::instance::Owned;
use crate::iofs::{self, NotReady, SocketWatch};
use crate::logs::{LogTags, spawn_capture};
use crate::pool::{ColdStart, Conn, HotInstance, Pool};

impl Agent {
    /// Start a hot instance for `pool` and wait until it is ready.
    /// `queued`: when the call that launched it (`call_id`) arrived (its
    /// `reserve` phase); a start that fails leaves its log to that call.
    pub(crate) async fn start_hot(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        app: &Arc<App>,
        func: &Arc<Fn>,
        reservation: Reservation,
        call_id: &str,
        queued: Instant,
    ) -> Result<HotInstance, Error> {
        let t0 = Instant::now();
        let t_reserved = t0.saturating_duration_since(queued);
        let driver = Arc::clone(self.driver_for(&func.image)?);
        let id = fnrs_model::new_id();
        let iofs_dir = if pool.format == Format::HttpStream {
            let made = tokio::task::spawn_blocking(self.iofs.instance_dir_job(&id))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            Some(made.map_err(|e| {
                tracing::error!(error = %e, "creating iofs dir failed");
                Error::INTERNAL
            })?)
        } else {
            None
        };
        // Owns the directory until the instance does.
        let mut dir_guard = iofs::DirGuard(iofs_dir.clone());
        let watch = iofs_dir.as_deref().map(SocketWatch::new);
        let spec = InstanceSpec {
            id: id.clone(),
            app_id: app.id.clone(),
            fn_id: func.id.clone(),
            image: func.image.clone(),
            env: instance_env(
                app,
                func,
                pool.format,
                iofs_dir.as_deref().map(|d| driver.iofs_mount(d)),
            ),
            memory_mb: func.memory,
            iofs_dir: iofs_dir.clone(),
            stdin: pool.format.uses_stdin(),
            syslog_url: app.syslog_url.clone().filter(|u| !u.is_empty()),
        };
        let mut started = driver.start(spec).await.map_err(driver_error)?;
        let t_started = t0.elapsed();
        let io = started.take_io();
        let inst: Arc<dyn Instance> = Arc::from(started);
        dir_guard.0 = None;
        let owned = Owned::new(&self.live, id.clone(), inst, iofs_dir, Some(reservation));
        let io = io.ok_or(Error::INTERNAL)?;
        let tags = LogTags {
            app_id: app.id.clone(),
            fn_id: func.id.clone(),
            instance_id: id,
        };
        let (conn, log_streams) = match &watch {
            Some(_) => (None, vec![io.stdout, io.stderr]),
            None => {
                let stdin = io.stdin.ok_or(Error::INTERNAL)?;
                let c = StdioConn::new(pool.format, stdin, io.stdout, self.limits);
                (Some(Conn::Stdio(c)), vec![io.stderr])
            }
        };
        // What it writes while starting goes to the first call it serves.
        let logs = spawn_capture(
            log_streams,
            tags,
            self.config.max_log_size,
            !self.config.disable_debug_user_logs,
            Arc::clone(&self.recorder),
            None,
        );
        let conn = match (conn, watch, owned.dir()) {
            (Some(c), _, _) => c,
            (None, Some(watch), Some(dir)) => {
                let deadline = t0 + self.config.hot_start_timeout;
                let exited = {
                    let inst = Arc::clone(owned.inst());
                    async move {
                        inst.wait().await;
                    }
                };
                let err = match watch.wait(deadline, exited).await {
                    Ok(()) => None,
                    Err(NotReady::TimedOut) => Some(ERR_INIT_TIMEOUT),
                    Err(NotReady::Exited) => Some(ERR_INIT_FAIL),
                };
                if let Some(err) = err {
                    logs.begin(call_id);
                    logs.end();
                    metrics::counter!("fn_cold_start_failures_total").increment(1);
                    return Err(err);
                }
                match HttpStreamConn::connect(dir, self.limits).await {
                    Ok(c) => Conn::HttpStream(c),
                    Err(e) => {
                        logs.begin(call_id);
                        logs.end();
                        return Err(e.error);
                    }
                }
            }
            _ => unreachable!("an http-stream instance always has a watch and a dir"),
        };
        let t_ready = t0.elapsed();
        metrics::counter!("fn_cold_starts_total").increment(1);
        metrics::histogram!("fn_cold_start_seconds", "phase" => "reserve")
            .record(t_reserved.as_secs_f64());
        metrics::histogram!("fn_cold_start_seconds", "phase" => "start")
            .record(t_started.as_secs_f64());
        metrics::histogram!("fn_cold_start_seconds", "phase" => "ready")
            .record(t_ready.as_secs_f64());
        Ok(HotInstance {
            owned,
            conn,
            logs,
            idle_since: Instant::now(),
            cold: Some(ColdStart {
                t0,
                reserve: t_reserved,
                start: t_started,
                ready: t_ready,
            }),
            _member: pool.member(),
        })
    }
}

/// The environment of an instance (contract §2.1), plus `FN_APP_NAME` and
/// `FN_FN_NAME` which the FDKs read.
pub(crate) fn instance_env(
    app: &App,
    func: &Fn,
    format: Format,
    iofs_mount: Option<String>,
) -> Vec<(String, String)> {
    let mut env: HashMap<String, String> = HashMap::new();
    for (k, v) in app.config.iter().chain(func.config.iter()) {
        env.insert(k.clone(), v.clone());
    }
    env.insert("FN_MEMORY".into(), func.memory.to_string());
    env.insert("FN_TYPE".into(), "sync".into());
    env.insert("FN_FN_ID".into(), func.id.clone());
    env.insert("FN_APP_ID".into(), app.id.clone());
    env.insert("FN_APP_NAME".into(), app.name.clone());
    env.insert("FN_FN_NAME".into(), func.name.clone());
    env.insert("FN_FORMAT".into(), format.name().to_string());
    if let Some(mount) = iofs_mount {
        env.insert(
            "FN_LISTENER".into(),
            format!("unix:{mount}/{}", iofs::SOCKET_NAME),
        );
    }
    let mut env: Vec<_> = env.into_iter().collect();
    env.sort();
    env
}
