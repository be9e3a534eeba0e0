//! The agent runs calls: it finds an idle hot instance of the fn (or reserves
//! memory and starts one through a [`Driver`]), hands the request to the
//! function through `fnrs-protocol`, streams the answer back, captures the
//! function's logs and records the call.
//!
//! The path of a call: [`Agent::invoke`] → `hot` (a pooled instance, whose
//! starts run in `start`) or `cold` (one instance per call) or `detached`
//! (stored, answered 202, run later); `records` makes and finishes the call
//! record. Every instance is owned by an `instance::Owned` from its start to
//! its end.
//!
//! Contract: `docs/function-contract.md` §4.4–4.5 and §5.

mod body;
mod capacity;
mod cold;
mod config;
mod detached;
mod errors;
mod fncalls;
mod hot;
mod instance;
mod iofs;
mod logs;
mod pool;
mod recorder;
mod records;
mod start;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fnrs_datastore::Datastore;
use fnrs_driver::Driver;
use fnrs_model::{App, CallStatus, CallType, DateTime, Error, Fn, Trigger};
use fnrs_protocol::{BoxBody, CallRequest, Format, Limits};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use config::{AgentConfig, DEFAULT_HOT_POLL_MSECS};
pub use fnrs_model::CALL_ID_HEADER;
pub use iofs::{
    ServerLock, default_iofs_base, default_lock_dir, running_as_root, server_is_dead,
    server_is_live,
};
pub use recorder::DEFAULT_BACKLOG_BYTES;

use capacity::Capacity;
use errors::{ERR_BUSY, ERR_TOO_BIG, driver_error};
use instance::Live;
use iofs::IofsRoot;
use pool::Pool;
use recorder::Recorder;
use records::{finish_record, new_record, outcome_label};

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
    live: Arc<Live>,
    iofs: IofsRoot,
    _lock: ServerLock,
    recorder: Arc<Recorder>,
    limits: Limits,
    shutting_down: AtomicBool,
    in_flight: AtomicUsize,
    idle_now: Notify,
    /// `fn_calls_total` by fn and outcome.
    fn_calls: fncalls::FnCalls,
    /// Detached calls running at once (closed at shutdown).
    detached_slots: Arc<tokio::sync::Semaphore>,
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
            recorder: Recorder::start_with_backlog(
                Arc::clone(&store),
                config.max_calls_per_fn,
                config.recorder_backlog_bytes,
            ),
            config,
            store,
            drivers,
            capacity: Capacity::new(total),
            pools: Mutex::new(HashMap::new()),
            live: Arc::new(Live::default()),
            iofs,
            _lock: lock,
            limits,
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            fn_calls: fncalls::FnCalls::default(),
            detached_slots: Arc::new(tokio::sync::Semaphore::new(detached::CONCURRENCY)),
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
            "instances": self.live.len(),
            "pools": self.pools.lock().len(),
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
        mut record: fnrs_model::Call,
    ) -> Result<Response<BoxBody>, CallError> {
        let call_id = record.id.clone();
        match self.run_once(call, format, &mut record).await {
            Ok(mut resp) => {
                if let Ok(v) = HeaderValue::from_str(&call_id) {
                    resp.headers_mut()
                        .insert(HeaderName::from_static(CALL_ID_HEADER), v);
                }
                Ok(resp)
            }
            Err(e) => {
                finish_record(&mut record, Some(e.status), Some(&e));
                self.fn_calls.of(&record.fn_id).add(outcome_label(Some(&e)));
                self.recorder.call(record);
                Err(CallError::new(Some(&call_id), e))
            }
        }
    }

    /// Run a call; a failure leaves its record to the caller.
    async fn run_once(
        self: &Arc<Self>,
        call: InvokeCall,
        format: Format,
        record: &mut fnrs_model::Call,
    ) -> Result<Response<BoxBody>, Error> {
        let queued = Instant::now();
        if format.is_hot() {
            self.run_hot(call, format, record, queued).await
        } else {
            self.run_cold(call, record, queued).await
        }
    }

    /// Answer new calls 503 from now on (in-flight ones go on).
    pub fn stop_accepting(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.detached_slots.close();
    }

    /// Stop taking calls, let in-flight calls finish within `grace`, then end
    /// every instance (all at once, within `grace` again), write what is
    /// pending and remove the iofs area.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        // Detached calls not yet running stay pending for the next start.
        self.detached_slots.close();
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
        let idle = pools.iter().flat_map(|p| p.retire()).map(|i| i.destroy());
        let live = self.live.drain();
        let ends = futures::future::join_all(
            idle.map(futures::FutureExt::boxed)
                .chain(live.iter().map(|i| i.destroy())),
        );
        if tokio::time::timeout(grace, ends).await.is_err() {
            tracing::warn!("ending instances took longer than the grace period");
        }
        for d in &self.drivers {
            d.shutdown().await;
        }
        self.recorder.close().await;
        let _ = tokio::task::spawn_blocking(self.iofs.remove_all_job()).await;
    }

    /// The agent's own part of `/metrics` (Prometheus text).
    pub fn metrics_text(&self) -> String {
        self.fn_calls.render()
    }

    /// Number of live instances (for tests and health).
    pub fn instance_count(&self) -> usize {
        self.live.len()
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

/// Ends idle instances past their fn's idle timeout, and ones that exited.
async fn reaper(agent: std::sync::Weak<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
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
            // Pools without instances or calls go (a deleted fn's too); a
            // call registers as waiting under this lock, so none is in use.
            pools.retain(|id, p| {
                let keep = !p.is_unused();
                if !keep {
                    agent.fn_calls.mark_due(id);
                }
                keep
            });
        }
        let idle: usize = agent.pools.lock().values().map(|p| p.idle_count()).sum();
        for inst in expired {
            tokio::spawn(inst.destroy());
        }
        let live = agent.live.len();
        metrics::gauge!("fn_instances", "state" => "idle").set(idle as f64);
        metrics::gauge!("fn_instances", "state" => "busy").set(live.saturating_sub(idle) as f64);
        // Fns whose pool went are looked up soon; all others (cold fns)
        // every ten minutes.
        if ticks.is_multiple_of(2400) {
            agent.fn_calls.mark_all_due();
        }
        if ticks.is_multiple_of(8) {
            tokio::spawn(forget_deleted_fns(Arc::clone(&agent)));
        }
    }
}

/// Drop the call counts of fns due for a check, without a pool, that the
/// store no longer has.
async fn forget_deleted_fns(agent: Arc<Agent>) {
    let ids = {
        let pools = agent.pools.lock();
        agent.fn_calls.take_due(|id| pools.contains_key(id))
    };
    for id in ids {
        if let Err(e) = agent.store.get_fn(&id).await
            && e == Error::FN_NOT_FOUND
        {
            agent.fn_calls.forget(&id);
        }
    }
}
