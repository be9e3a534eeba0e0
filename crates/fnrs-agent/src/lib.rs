//! The agent runs calls: it finds an idle hot instance of the fn (or reserves
//! memory and starts one through a [`Driver`]), hands the request to the
//! function through `fnrs-protocol`, streams the answer back, captures the
//! function's logs and records the call.
//!
//! Contract: `docs/function-contract.md` §4.4–4.5 and §5.

mod body;
mod capacity;
mod config;
mod iofs;
mod logs;
mod pool;
mod recorder;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fnrs_datastore::Datastore;
use fnrs_driver::{Driver, DriverError, Instance, InstanceSpec};
use fnrs_model::{App, Call, CallStatus, CallType, DateTime, Error, Fn, PendingCall, Trigger};
use fnrs_protocol::{
    BoxBody, CallRequest, Format, HttpStreamConn, Limits, StdioConn, empty_body, full_body,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use config::AgentConfig;
pub use iofs::{
    ServerLock, default_iofs_base, default_lock_dir, running_as_root, server_is_dead,
    server_is_live,
};

use body::CallBody;
use capacity::{Capacity, Reservation};
use iofs::{IofsRoot, NotReady, SocketWatch};
use logs::{LogTags, spawn_capture};
use pool::{Conn, HotInstance, Pool, Version};
use recorder::Recorder;

/// `Fn-Call-Id`, on every answer that has a call.
pub const CALL_ID_HEADER: &str = "fn-call-id";

const ERR_BUSY: Error = Error::new(503, "Timed out - server too busy");
const ERR_TOO_BIG: Error = Error::new(400, "Requested CPU/Memory cannot be allocated");
const ERR_INIT_FAIL: Error = Error::new(
    502,
    "Container failed to initialize, please ensure you are using the latest fdk and check the logs",
);
const ERR_INIT_TIMEOUT: Error = Error::new(
    504,
    "Container initialization timed out, please ensure you are using the latest fdk and check the logs",
);

/// One call as the API hands it over.
pub struct InvokeCall {
    pub app: Arc<App>,
    pub func: Arc<Fn>,
    pub trigger: Option<Arc<Trigger>>,
    pub method: Method,
    /// Absolute original URL.
    pub url: String,
    pub headers: HeaderMap,
    pub body: BoxBody,
    pub detached: bool,
}

impl InvokeCall {
    /// The request for the function (the fn's timeout counted from now),
    /// and the app and fn it belongs to.
    fn into_request(self, call_id: &str) -> (Arc<App>, Arc<Fn>, CallRequest) {
        let secs = self.func.timeout.max(1);
        let req = CallRequest {
            call_id: call_id.to_string(),
            deadline: DateTime::now().plus_secs(i64::from(secs)),
            timeout: Duration::from_secs(secs as u64),
            method: self.method,
            url: self.url,
            headers: self.headers,
            gateway: self.trigger.is_some(),
            body: self.body,
        };
        (self.app, self.func, req)
    }
}

/// A failed call: Fn's status and message, and the call id when one was made.
#[derive(Debug, Clone)]
pub struct CallError {
    pub call_id: Option<String>,
    pub error: Error,
}

impl CallError {
    fn new(call_id: Option<&str>, error: Error) -> Self {
        Self {
            call_id: call_id.map(str::to_string),
            error,
        }
    }
}

/// The agent. Cheap to share (`Arc`).
pub struct Agent {
    config: AgentConfig,
    store: Arc<dyn Datastore>,
    drivers: Vec<Arc<dyn Driver>>,
    capacity: Arc<Capacity>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Every live instance, to end them all at shutdown.
    live: Mutex<HashMap<String, Arc<dyn Instance>>>,
    iofs: IofsRoot,
    _lock: ServerLock,
    recorder: Arc<Recorder>,
    limits: Limits,
    shutting_down: AtomicBool,
    in_flight: AtomicUsize,
    idle_now: Notify,
    server_id: String,
    /// Servers that had stopped when this one started, whose leftovers
    /// this start removed: their lock files go in [`Agent::remove_dead_locks`].
    dead: Mutex<std::collections::BTreeSet<String>>,
}

impl Agent {
    /// Start the agent: claim the iofs area (removing what crashed servers
    /// left), clean up the drivers' leftovers, start the recorder and reaper.
    pub async fn start(
        config: AgentConfig,
        store: Arc<dyn Datastore>,
        drivers: Vec<Arc<dyn Driver>>,
    ) -> Result<Arc<Self>, String> {
        let server_id = config.server_id.clone().unwrap_or_else(fnrs_model::new_id);
        let lock = ServerLock::acquire(&config.lock_dir, &server_id).map_err(|e| {
            format!(
                "cannot lock {}/{server_id}.lock: {e}",
                config.lock_dir.display()
            )
        })?;
        // Judged before their leftovers go: only these locks are removed
        // afterwards (a server dying meanwhile keeps its lock until the
        // next start has cleaned up after it).
        let dead = iofs::dead_servers(&config.lock_dir, &server_id);
        let iofs = {
            let (base, id, locks) = (
                config.iofs_path.clone(),
                server_id.clone(),
                config.lock_dir.clone(),
            );
            let (tmpfs, required) = (config.iofs_tmpfs.clone(), config.iofs_tmpfs_required);
            tokio::task::spawn_blocking(move || {
                IofsRoot::create(&base, &id, &locks, tmpfs.as_deref(), required)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| {
                format!(
                    "cannot use FN_IOFS_PATH {}: {e}",
                    config.iofs_path.display()
                )
            })?
        };
        let mut leftovers_cleaned = true;
        for d in &drivers {
            match d.cleanup_leftovers().await {
                Ok(()) => {}
                // No engine, nothing it runs to clean (see remove_dead_locks).
                Err(e @ fnrs_driver::DriverError::Unavailable(_)) => {
                    tracing::warn!(driver = d.name(), error = %e, "cleaning up leftovers failed");
                }
                Err(e) => {
                    tracing::warn!(driver = d.name(), error = %e, "cleaning up leftovers failed");
                    leftovers_cleaned = false;
                }
            }
        }
        let mut dead = dead;
        if !leftovers_cleaned {
            // Their locks stay: the next start judges them again.
            dead.clear();
        }
        for id in iofs.stale_left() {
            dead.remove(id);
        }
        let total = capacity::detect_total_memory(config.max_total_memory);
        tracing::info!(total_memory_mb = total / (1024 * 1024), "agent capacity");
        let limits = Limits {
            max_response_header_bytes: if config.max_hdr_response_size == 0 {
                10 * 1024 * 1024
            } else {
                config.max_hdr_response_size
            },
            max_response_body_bytes: (config.max_response_size > 0)
                .then_some(config.max_response_size),
        };
        let agent = Arc::new(Self {
            recorder: Recorder::start(Arc::clone(&store), config.max_calls_per_fn),
            config,
            store,
            drivers,
            capacity: Capacity::new(total),
            pools: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            iofs,
            _lock: lock,
            limits,
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_now: Notify::new(),
            server_id,
            dead: Mutex::new(dead),
        });
        tokio::spawn(reaper(Arc::downgrade(&agent)));
        Ok(agent)
    }

    /// Remove the lock files of the servers that had stopped when this one
    /// started, once everything they left is gone: call it after the
    /// caller's own cleanup of them (cgroups), naming those whose cleanup
    /// failed in `keep` (their locks stay, for the next start to judge).
    /// A container engine that was unreachable at start counts as having
    /// nothing of theirs.
    pub async fn remove_dead_locks(&self, keep: &std::collections::BTreeSet<String>) {
        let mut dead = std::mem::take(&mut *self.dead.lock());
        dead.retain(|id| !keep.contains(id));
        if dead.is_empty() {
            return;
        }
        let dir = self.config.lock_dir.clone();
        let n = tokio::task::spawn_blocking(move || iofs::remove_dead_locks(&dir, &dead))
            .await
            .unwrap_or(0);
        if n > 0 {
            tracing::info!(removed = n, "removed the lock files of stopped servers");
        }
    }

    /// This server run's id (labels, iofs area).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Check a fn's image with the driver that would run it (on create/update).
    /// An image no driver handles is accepted (Fn accepts any image); its
    /// calls answer 503 naming the problem.
    pub async fn check_image(&self, image: &str) -> Result<(), Error> {
        match self.drivers.iter().find(|d| d.handles(image)) {
            Some(d) => d.check_image(image).await.map_err(driver_error),
            None => Ok(()),
        }
    }

    /// Health of the agent and its drivers.
    pub async fn health(&self) -> serde_json::Value {
        let mut drivers = serde_json::Map::new();
        for d in &self.drivers {
            drivers.insert(d.name().to_string(), d.health().await);
        }
        serde_json::json!({
            "server_id": self.server_id,
            "drivers": drivers,
            "memory_total_bytes": self.capacity.total(),
            "memory_used_bytes": self.capacity.used(),
            "instances": self.live.lock().len(),
            "iofs_tmpfs": self.iofs.tmpfs(),
        })
    }

    fn driver_for(&self, image: &str) -> Result<&Arc<dyn Driver>, Error> {
        self.drivers.iter().find(|d| d.handles(image)).ok_or_else(|| {
            Error::with_message(
                503,
                format!("no driver can run image '{image}': the Docker driver is not available on this server"),
            )
        })
    }

    /// Run one call. Sync calls answer when the function answers (body
    /// streaming); detached calls are stored and answered 202 at once.
    pub async fn invoke(
        self: &Arc<Self>,
        call: InvokeCall,
    ) -> Result<Response<BoxBody>, CallError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(CallError::new(None, ERR_BUSY));
        }
        let format =
            Format::parse(call.func.format.as_deref()).map_err(|e| CallError::new(None, e))?;
        if !self.capacity.can_ever_fit(call.func.memory) {
            return Err(CallError::new(None, ERR_TOO_BIG));
        }
        let call_id = fnrs_model::new_id();
        if call.detached {
            return self.detach(call, call_id).await;
        }
        let _guard = InFlight::enter(self);
        let record = new_record(&call, &call_id, CallType::Sync, CallStatus::Running);
        self.run(call, format, record).await
    }

    /// Run a call whose record is made; finish the record when it ends.
    async fn run(
        self: &Arc<Self>,
        call: InvokeCall,
        format: Format,
        mut record: Call,
    ) -> Result<Response<BoxBody>, CallError> {
        let call_id = record.id.clone();
        let queued = Instant::now();
        let result = if format.is_hot() {
            self.run_hot(call, format, &mut record, queued).await
        } else {
            self.run_cold(call, &mut record, queued).await
        };
        match result {
            Ok(mut resp) => {
                if let Ok(v) = HeaderValue::from_str(&call_id) {
                    resp.headers_mut()
                        .insert(HeaderName::from_static(CALL_ID_HEADER), v);
                }
                Ok(resp)
            }
            Err(e) => {
                finish_record(&mut record, Some(e.status), Some(&e));
                metrics::counter!("fn_calls_total", "fn_id" => record.fn_id.clone(), "outcome" => outcome_label(Some(&e)))
                    .increment(1);
                self.recorder.call(record);
                Err(CallError::new(Some(&call_id), e))
            }
        }
    }

    async fn run_hot(
        self: &Arc<Self>,
        call: InvokeCall,
        format: Format,
        record: &mut Call,
        queued: Instant,
    ) -> Result<Response<BoxBody>, Error> {
        let pool = self.pool_for(&call.app, &call.func, format);
        let mut inst = self
            .acquire(&pool, &call.app, &call.func, record, queued)
            .await?;
        record.status = CallStatus::Running;
        record.started_at = Some(DateTime::now());
        let (_, _, req) = call.into_request(&record.id);
        inst.logs.begin(&record.id);
        let started = Instant::now();
        let result = match &mut inst.conn {
            Conn::HttpStream(c) => c.call(req).await,
            Conn::Stdio(c) => c.call(req).await,
        };
        if let (Some(t0), true) = (inst.cold_since.take(), result.is_ok()) {
            // The first call of a new instance: its cold start ends here.
            let t = t0.elapsed();
            metrics::histogram!("fn_cold_start_seconds", "phase" => "first_byte")
                .record(t.as_secs_f64());
            if let Some(cs) = record
                .stats
                .get_mut("cold_start")
                .and_then(|v| v.as_object_mut())
            {
                cs.insert("first_byte_us".into(), (t.as_micros() as u64).into());
            }
        }
        match result {
            Ok(handle) => {
                let (parts, inner) = handle.response.into_parts();
                let finish = HotFinish {
                    agent: Arc::clone(self),
                    pool,
                    inst,
                    record: take_record(record),
                    status: parts.status.as_u16(),
                    started,
                    _guard: InFlight::enter(self),
                };
                let body = CallBody::new(inner, handle.done, Box::new(finish));
                Ok(Response::from_parts(parts, body.boxed_unsync()))
            }
            Err(pe) => {
                let mut error = pe.error;
                if !pe.instance_ok
                    && let Some(oom) = oom_error(&inst.inst).await
                {
                    inst.logs.note(format!("[fnrs] {}", oom.message));
                    error = oom;
                }
                inst.logs.end();
                self.release(&pool, inst, pe.instance_ok);
                Err(error)
            }
        }
    }

    /// Give an instance back after a call, or end it.
    fn release(self: &Arc<Self>, pool: &Arc<Pool>, inst: HotInstance, ok: bool) {
        if !ok || self.shutting_down.load(Ordering::Acquire) {
            self.teardown(inst);
            return;
        }
        match pool.put_idle(inst) {
            // Callers short of memory may now evict it.
            None => self.capacity.released.notify_waiters(),
            Some(inst) => self.teardown(inst),
        }
    }

    /// The pool of the fn's current version (retiring an older one).
    fn pool_for(self: &Arc<Self>, app: &App, func: &Fn, format: Format) -> Arc<Pool> {
        let version = Version {
            fn_updated: func.updated_at.as_millis(),
            app_updated: app.updated_at.as_millis(),
        };
        let mut pools = self.pools.lock();
        if let Some(p) = pools.get(&func.id)
            && p.version == version
        {
            return Arc::clone(p);
        }
        let pool = Arc::new(Pool::new(
            &func.id,
            version,
            format,
            func.memory,
            Duration::from_secs(func.idle_timeout.max(1) as u64),
        ));
        if let Some(old) = pools.insert(func.id.clone(), Arc::clone(&pool)) {
            for inst in old.retire() {
                self.teardown(inst);
            }
        }
        pool
    }

    /// An idle instance of the pool, or a new one when memory allows; waits
    /// at most `max_queue_wait` for either.
    async fn acquire(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        app: &Arc<App>,
        func: &Arc<Fn>,
        record: &mut Call,
        queued: Instant,
    ) -> Result<HotInstance, Error> {
        let deadline = queued + self.config.max_queue_wait;
        let mut dead = Vec::new();
        loop {
            let idle = pool.idle_ready.notified();
            let freed = self.capacity.released.notified();
            tokio::pin!(idle, freed);
            idle.as_mut().enable();
            freed.as_mut().enable();

            let found = pool.take_idle(&mut dead);
            for d in dead.drain(..) {
                self.teardown(d);
            }
            if let Some(inst) = found {
                pool.metrics
                    .queue_wait
                    .record(queued.elapsed().as_secs_f64());
                return Ok(inst);
            }
            match self.capacity.try_reserve(pool.memory_mb) {
                Ok(res) => {
                    pool.metrics
                        .queue_wait
                        .record(queued.elapsed().as_secs_f64());
                    return self.start_hot(pool, app, func, res, record, queued).await;
                }
                Err(short) => {
                    if self.evict(short, Some(pool)).await {
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = idle => {}
                _ = freed => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ERR_BUSY),
            }
        }
    }

    /// End idle instances of other pools, oldest first, to free `bytes`.
    /// Returns whether anything was freed.
    async fn evict(&self, bytes: u64, except: Option<&Arc<Pool>>) -> bool {
        let mut victims = Vec::new();
        {
            let pools = self.pools.lock();
            let mut candidates: Vec<&Arc<Pool>> = pools
                .values()
                .filter(|p| !except.is_some_and(|e| Arc::ptr_eq(p, e)) && p.idle_count() > 0)
                .collect();
            candidates.sort_by_key(|p| p.oldest_idle());
            let mut freed = 0;
            for p in candidates {
                if freed >= bytes {
                    break;
                }
                freed += p.evict(bytes - freed, &mut victims);
            }
        }
        if victims.is_empty() {
            return false;
        }
        metrics::counter!("fn_evictions_total").increment(victims.len() as u64);
        for v in victims {
            self.destroy(v).await;
        }
        true
    }

    /// Start a hot instance and wait until it is ready.
    async fn start_hot(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        app: &Arc<App>,
        func: &Arc<Fn>,
        reservation: Reservation,
        record: &mut Call,
        queued: Instant,
    ) -> Result<HotInstance, Error> {
        let t0 = Instant::now();
        let t_reserved = t0.saturating_duration_since(queued);
        let driver = Arc::clone(self.driver_for(&func.image)?);
        let id = fnrs_model::new_id();
        let http_stream = pool.format == Format::HttpStream;
        let iofs_dir = if http_stream {
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
        let started = match driver.start(spec).await {
            Ok(i) => i,
            Err(e) => return Err(driver_error(e)),
        };
        let t_started = t0.elapsed();
        let mut started = started;
        let io = started.take_io();
        let inst: Arc<dyn Instance> = Arc::from(started);
        self.live.lock().insert(id.clone(), Arc::clone(&inst));
        let Some(io) = io else {
            self.destroy_parts(&id, &inst, iofs_dir.as_deref()).await;
            return Err(Error::INTERNAL);
        };
        let tags = LogTags {
            app_id: app.id.clone(),
            fn_id: func.id.clone(),
            instance_id: id.clone(),
        };
        let echo = !self.config.disable_debug_user_logs;
        let (conn, log_streams) = match &watch {
            Some(_) => (None, vec![io.stdout, io.stderr]),
            None => {
                let Some(stdin) = io.stdin else {
                    self.destroy_parts(&id, &inst, iofs_dir.as_deref()).await;
                    return Err(Error::INTERNAL);
                };
                let c = StdioConn::new(pool.format, stdin, io.stdout, self.limits);
                (Some(Conn::Stdio(c)), vec![io.stderr])
            }
        };
        let logs = spawn_capture(
            log_streams,
            tags,
            self.config.max_log_size,
            echo,
            Arc::clone(&self.recorder),
            // Lines written while starting go to the call that caused the start.
            Some(&record.id),
        );
        let conn = match (conn, watch, &iofs_dir) {
            (Some(c), _, _) => c,
            (None, Some(watch), Some(dir)) => {
                let deadline = t0 + self.config.hot_start_timeout;
                let exited = {
                    let inst = Arc::clone(&inst);
                    async move {
                        inst.wait().await;
                    }
                };
                let ready = watch.wait(deadline, exited).await;
                let err = match ready {
                    Ok(()) => None,
                    Err(NotReady::TimedOut) => Some(ERR_INIT_TIMEOUT),
                    Err(NotReady::Exited) => Some(ERR_INIT_FAIL),
                };
                if let Some(err) = err {
                    logs.end();
                    self.destroy_parts(&id, &inst, Some(dir)).await;
                    metrics::counter!("fn_cold_start_failures_total").increment(1);
                    return Err(err);
                }
                match HttpStreamConn::connect(dir, self.limits).await {
                    Ok(c) => Conn::HttpStream(c),
                    Err(e) => {
                        logs.end();
                        self.destroy_parts(&id, &inst, Some(dir)).await;
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
        // `first_byte_us` joins these when the first call's answer begins.
        record.stats.insert(
            "cold_start".into(),
            serde_json::json!({
                "reserve_us": t_reserved.as_micros() as u64,
                "start_us": t_started.as_micros() as u64,
                "ready_us": t_ready.as_micros() as u64,
            }),
        );
        dir_guard.0 = None;
        Ok(HotInstance {
            id,
            inst,
            conn,
            logs,
            iofs_dir,
            reservation: Some(reservation),
            idle_since: Instant::now(),
            cold_since: Some(t0),
        })
    }

    /// A cold (`default` format) call: one instance for this call only.
    async fn run_cold(
        self: &Arc<Self>,
        call: InvokeCall,
        record: &mut Call,
        queued: Instant,
    ) -> Result<Response<BoxBody>, Error> {
        let deadline = queued + self.config.max_queue_wait;
        let reservation = loop {
            let freed = self.capacity.released.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.capacity.try_reserve(call.func.memory) {
                Ok(r) => break r,
                Err(short) => {
                    if self.evict(short, None).await {
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ERR_BUSY),
            }
        };
        let driver = Arc::clone(self.driver_for(&call.func.image)?);
        let (app, func, req) = call.into_request(&record.id);
        let mut env = instance_env(&app, &func, Format::Default, None);
        env.extend(fnrs_protocol::cold_env(&req));
        let id = fnrs_model::new_id();
        let spec = InstanceSpec {
            id: id.clone(),
            app_id: app.id.clone(),
            fn_id: func.id.clone(),
            image: func.image.clone(),
            env,
            memory_mb: func.memory,
            iofs_dir: None,
            stdin: true,
            syslog_url: app.syslog_url.clone().filter(|u| !u.is_empty()),
        };
        record.started_at = Some(DateTime::now());
        let mut started = driver.start(spec).await.map_err(driver_error)?;
        let io = started.take_io();
        let inst: Arc<dyn Instance> = Arc::from(started);
        self.live.lock().insert(id.clone(), Arc::clone(&inst));
        let Some(io) = io else {
            self.destroy_parts(&id, &inst, None).await;
            return Err(Error::INTERNAL);
        };
        let Some(stdin) = io.stdin else {
            self.destroy_parts(&id, &inst, None).await;
            return Err(Error::INTERNAL);
        };
        let logs = spawn_capture(
            vec![io.stderr],
            LogTags {
                app_id: app.id.clone(),
                fn_id: func.id.clone(),
                instance_id: id.clone(),
            },
            self.config.max_log_size,
            !self.config.disable_debug_user_logs,
            Arc::clone(&self.recorder),
            Some(&record.id),
        );
        let exit = {
            let inst = Arc::clone(&inst);
            async move {
                let e = inst.wait().await;
                (e.code, e.oom_killed)
            }
        };
        let started_at = Instant::now();
        let result = fnrs_protocol::cold_call(stdin, io.stdout, exit, req, self.limits).await;
        // The log ends when the instance's streams do: a container's stderr
        // can trail its exit. Dropping the handle finishes the call's log at EOF.
        drop(logs);
        self.destroy_parts(&id, &inst, None).await;
        drop(reservation);
        let (status, err) = match &result {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (Some(e.error.status), Some(e.error.clone())),
        };
        metrics::histogram!("fn_call_duration_seconds").record(started_at.elapsed().as_secs_f64());
        match result {
            Ok(resp) => {
                finish_record(record, status, err.as_ref());
                metrics::counter!("fn_calls_total", "fn_id" => record.fn_id.clone(), "outcome" => "success")
                    .increment(1);
                self.recorder.call(record.clone());
                Ok(resp)
            }
            Err(e) => Err(e.error),
        }
    }

    /// Detached: store the call and its request, answer 202, run it later.
    async fn detach(
        self: &Arc<Self>,
        call: InvokeCall,
        call_id: String,
    ) -> Result<Response<BoxBody>, CallError> {
        let limit = self.config.max_request_size;
        let body = match read_body(call.body, limit).await {
            Ok(b) => b,
            Err(e) => return Err(CallError::new(Some(&call_id), e)),
        };
        let record = new_record_parts(
            &call.app,
            &call.func,
            call.trigger.as_deref(),
            &call.method,
            &call.url,
            &call_id,
            CallType::Detached,
            CallStatus::Queued,
        );
        let pending = PendingCall {
            call_id: call_id.clone(),
            fn_id: call.func.id.clone(),
            trigger_id: call.trigger.as_ref().map(|t| t.id.clone()),
            method: call.method.to_string(),
            url: call.url.clone(),
            headers: call
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: body.to_vec(),
            attempts: 0,
        };
        self.store
            .insert_pending(&record, &pending)
            .await
            .map_err(|e| CallError::new(Some(&call_id), e))?;
        let agent = Arc::clone(self);
        let guard = InFlight::enter(self);
        tokio::spawn(async move {
            agent
                .run_detached(call.app, call.func, call.trigger, pending, record)
                .await;
            drop(guard);
        });
        let mut resp = Response::new(empty_body());
        *resp.status_mut() = http::StatusCode::ACCEPTED;
        if let Ok(v) = HeaderValue::from_str(&call_id) {
            resp.headers_mut()
                .insert(HeaderName::from_static(CALL_ID_HEADER), v);
        }
        Ok(resp)
    }

    async fn run_detached(
        self: Arc<Self>,
        app: Arc<App>,
        func: Arc<Fn>,
        trigger: Option<Arc<Trigger>>,
        pending: PendingCall,
        mut record: Call,
    ) {
        let format = match Format::parse(func.format.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                finish_record(&mut record, Some(e.status), Some(&e));
                self.recorder.call(record);
                let _ = self.store.remove_pending(&pending.call_id).await;
                return;
            }
        };
        if pending.attempts > 0 {
            record
                .stats
                .insert("attempts".into(), serde_json::json!(pending.attempts + 1));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &pending.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.append(k, v);
            }
        }
        let call = InvokeCall {
            app,
            func,
            trigger,
            method: pending.method.parse().unwrap_or(Method::POST),
            url: pending.url.clone(),
            headers,
            body: full_body(Bytes::from(pending.body)),
            detached: true,
        };
        record.status = CallStatus::Running;
        match self.run(call, format, record).await {
            Ok(resp) => {
                // The output is discarded, but the function must be able to send it.
                let _ = resp.into_body().collect().await;
            }
            Err(e) => {
                tracing::debug!(call_id = ?e.call_id, error = %e.error, "detached call failed")
            }
        }
        self.recorder.flush().await;
        if let Err(e) = self.store.remove_pending(&pending.call_id).await {
            tracing::warn!(call_id = %pending.call_id, error = %e, "removing pending call failed");
        }
    }

    /// Run the detached calls a previous server accepted but did not finish
    /// (at least once: a call cut short by a crash runs again).
    pub async fn resume_pending(self: &Arc<Self>) -> Result<usize, Error> {
        let pending = self.store.list_pending().await?;
        let n = pending.len();
        for p in pending {
            let found = async {
                let func = Arc::new(self.store.get_fn(&p.fn_id).await?);
                let app = Arc::new(self.store.get_app(&func.app_id).await?);
                let trigger = match &p.trigger_id {
                    Some(t) => Some(Arc::new(self.store.get_trigger(t).await?)),
                    None => None,
                };
                Ok::<_, Error>((app, func, trigger))
            }
            .await;
            let (app, func, trigger) = match found {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(call_id = %p.call_id, error = %e, "dropping pending call whose fn is gone");
                    let _ = self.store.remove_pending(&p.call_id).await;
                    continue;
                }
            };
            self.store.bump_pending_attempts(&p.call_id).await?;
            let record = match self.store.get_call(&p.fn_id, &p.call_id).await {
                Ok(c) => c,
                Err(_) => new_record_parts(
                    &app,
                    &func,
                    trigger.as_deref(),
                    &p.method.parse().unwrap_or(Method::POST),
                    &p.url,
                    &p.call_id,
                    CallType::Detached,
                    CallStatus::Queued,
                ),
            };
            let mut p = p;
            p.attempts += 1;
            let agent = Arc::clone(self);
            let guard = InFlight::enter(self);
            tracing::info!(call_id = %p.call_id, attempt = p.attempts + 1, "resuming detached call");
            tokio::spawn(async move {
                agent.run_detached(app, func, trigger, p, record).await;
                drop(guard);
            });
        }
        Ok(n)
    }

    /// End an instance in the background.
    fn teardown(self: &Arc<Self>, inst: HotInstance) {
        let agent = Arc::clone(self);
        tokio::spawn(async move { agent.destroy(inst).await });
    }

    async fn destroy(&self, inst: HotInstance) {
        inst.logs.end();
        self.destroy_parts(&inst.id, &inst.inst, inst.iofs_dir.as_deref())
            .await;
        drop(inst.reservation);
    }

    async fn destroy_parts(
        &self,
        id: &str,
        inst: &Arc<dyn Instance>,
        iofs_dir: Option<&std::path::Path>,
    ) {
        inst.destroy().await;
        if let Some(d) = iofs_dir {
            let d = d.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || iofs::remove_dir(&d)).await;
        }
        self.live.lock().remove(id);
    }

    /// Answer new calls 503 from now on (in-flight ones go on).
    pub fn stop_accepting(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Stop taking calls, let in-flight calls finish within `grace`, then end
    /// every instance, write what is pending and remove the iofs area.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        loop {
            let idle = self.idle_now.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(in_flight = self.in_flight.load(Ordering::Acquire), "shutdown grace period over, ending calls");
                    break;
                }
            }
        }
        let pools: Vec<Arc<Pool>> = self.pools.lock().drain().map(|(_, p)| p).collect();
        for p in pools {
            for inst in p.retire() {
                self.destroy(inst).await;
            }
        }
        let live: Vec<Arc<dyn Instance>> = self.live.lock().drain().map(|(_, i)| i).collect();
        for i in live {
            i.destroy().await;
        }
        for d in &self.drivers {
            d.shutdown().await;
        }
        self.recorder.close().await;
        let _ = tokio::task::spawn_blocking(self.iofs.remove_all_job()).await;
    }

    /// Number of live instances (for tests and health).
    pub fn instance_count(&self) -> usize {
        self.live.lock().len()
    }
}

/// Counts a call in flight while alive.
struct InFlight(Arc<Agent>);

impl InFlight {
    fn enter(agent: &Arc<Agent>) -> Self {
        agent.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(agent))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_now.notify_waiters();
        }
    }
}

/// Finishes a hot call when its answer's body is over.
struct HotFinish {
    agent: Arc<Agent>,
    pool: Arc<Pool>,
    inst: HotInstance,
    record: Call,
    status: u16,
    started: Instant,
    _guard: InFlight,
}

impl body::Finish for HotFinish {
    fn finish(self: Box<Self>, outcome: Option<fnrs_protocol::Outcome>) {
        let HotFinish {
            agent,
            pool,
            inst,
            mut record,
            status,
            started,
            _guard,
        } = *self;
        let (ok, err) = match outcome {
            Some(o) => (o.instance_ok, o.error.map(|e| e.error)),
            None => (false, None),
        };
        inst.logs.end();
        finish_record(&mut record, Some(status), err.as_ref());
        match &err {
            None => pool.metrics.success.increment(1),
            Some(e) => metrics::counter!("fn_calls_total", "fn_id" => record.fn_id.clone(), "outcome" => outcome_label(Some(e)))
                .increment(1),
        }
        pool.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        agent.recorder.call(record);
        agent.release(&pool, inst, ok);
    }
}

/// Ends idle instances past their fn's idle timeout, and ones that exited.
async fn reaper(agent: std::sync::Weak<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(agent) = agent.upgrade() else { return };
        if agent.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut pools = agent.pools.lock();
            for p in pools.values() {
                expired.extend(p.reap(now));
            }
            pools.retain(|_, p| !(p.is_retired() && p.idle_count() == 0));
        }
        let idle: usize = agent.pools.lock().values().map(|p| p.idle_count()).sum();
        for inst in expired {
            agent.teardown(inst);
        }
        let live = agent.live.lock().len();
        metrics::gauge!("fn_instances", "state" => "idle").set(idle as f64);
        metrics::gauge!("fn_instances", "state" => "busy").set(live.saturating_sub(idle) as f64);
    }
}

/// The environment of an instance (contract §2.1), plus `FN_APP_NAME` and
/// `FN_FN_NAME` which the FDKs read.
fn instance_env(
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

fn new_record(call: &InvokeCall, call_id: &str, kind: CallType, status: CallStatus) -> Call {
    new_record_parts(
        &call.app,
        &call.func,
        call.trigger.as_deref(),
        &call.method,
        &call.url,
        call_id,
        kind,
        status,
    )
}

/// Move a call's record out (to the call's body, which finishes it), leaving
/// an empty one that allocates nothing: the caller no longer needs it.
fn take_record(record: &mut Call) -> Call {
    let empty = Call {
        id: String::new(),
        status: record.status,
        kind: record.kind,
        app_id: String::new(),
        fn_id: String::new(),
        trigger_id: None,
        method: String::new(),
        url: String::new(),
        created_at: record.created_at,
        started_at: None,
        completed_at: None,
        http_status: None,
        error: None,
        stats: serde_json::Map::new(),
    };
    std::mem::replace(record, empty)
}

#[allow(clippy::too_many_arguments)]
fn new_record_parts(
    app: &App,
    func: &Fn,
    trigger: Option<&Trigger>,
    method: &Method,
    url: &str,
    call_id: &str,
    kind: CallType,
    status: CallStatus,
) -> Call {
    Call {
        id: call_id.to_string(),
        status,
        kind,
        app_id: app.id.clone(),
        fn_id: func.id.clone(),
        trigger_id: trigger.map(|t| t.id.clone()),
        method: method.to_string(),
        url: url.to_string(),
        created_at: DateTime::now(),
        started_at: None,
        completed_at: None,
        http_status: None,
        error: None,
        stats: serde_json::Map::new(),
    }
}

fn finish_record(record: &mut Call, status: Option<u16>, err: Option<&Error>) {
    record.completed_at = Some(DateTime::now());
    record.http_status = status.or(record.http_status);
    match err {
        None => record.status = CallStatus::Success,
        Some(e) => {
            record.status = if e.status == 504 {
                CallStatus::Timeout
            } else {
                CallStatus::Error
            };
            record.error = Some(e.message.to_string());
            record.http_status = Some(e.status);
        }
    }
}

/// Fn's message for an instance the kernel killed for memory.
const OOM_MESSAGE: &str =
    "container out of memory, you may want to raise fn.memory for this function (default: 128MB)";

/// If a failed instance died of out-of-memory (it usually has just exited
/// when its connection broke), Fn's out-of-memory error.
async fn oom_error(inst: &Arc<dyn Instance>) -> Option<Error> {
    let exit = tokio::time::timeout(Duration::from_millis(500), inst.wait())
        .await
        .ok()?;
    exit.oom_killed.then(|| Error::new(502, OOM_MESSAGE))
}

fn outcome_label(err: Option<&Error>) -> &'static str {
    match err {
        None => "success",
        Some(e) if e.status == 504 => "timeout",
        Some(e) if e.status == 503 => "busy",
        Some(e) if e.status < 500 => "rejected",
        Some(_) => "error",
    }
}

fn driver_error(e: DriverError) -> Error {
    match e {
        DriverError::BadImage(m) => Error::with_message(400, m),
        DriverError::Pull { status, message } => Error::with_message(status, message),
        DriverError::PullTimeout => Error::new(504, "Image pull timed out"),
        DriverError::Unavailable(m) => Error::with_message(503, m),
        DriverError::Syslog(m) => {
            tracing::warn!(error = %m, "the app's syslog cannot be used");
            Error::new(500, "Syslog Unavailable")
        }
        DriverError::Internal(m) => {
            tracing::error!(error = %m, "driver failed");
            Error::INTERNAL
        }
    }
}

/// Read a whole body, at most `limit` bytes (0 = no limit).
async fn read_body(mut body: BoxBody, limit: u64) -> Result<Bytes, Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Error::new(400, "error reading request body"))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if limit > 0 && buf.len() as u64 > limit {
                return Err(Error::with_message(
                    413,
                    format!(
                        "Content-Length too large for this server, {} > max {limit}",
                        buf.len()
                    ),
                ));
            }
        }
    }
    Ok(buf.freeze())
}
