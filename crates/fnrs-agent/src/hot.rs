//! The hot path: a call takes an idle instance of its fn's pool, or waits
//! for one while starts add instances to the pool (contract §5.2).
//!
//! Starts are decoupled from calls: a start runs in its own task and puts
//! its instance in the pool, where the first waiting call takes it. A call
//! that waits launches at most one start at a time, and only once it is
//! overdue: at once when the pool has no instance at all, else after
//! `FN_HOT_POLL_MSECS`; starts under way never outnumber overdue calls. So a
//! burst that the warm instances absorb within the delay starts nothing,
//! and a real rise gets one start per waiting call.

use std::sync::Arc;
use std::time::Duration;

use fnrs_model::{App, Call, CallStatus, DateTime, Error, Fn};
use fnrs_protocol::{BoxBody, Format};
use http::Response;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::{self, CallBody};
use crate::capacity::Reservation;
use crate::errors::{ERR_BUSY, oom_error};
use crate::pool::{Conn, HotInstance, Pool, StartClaim, Version, Waiter};
use crate::records::{finish_record, outcome_label, take_record};
use crate::{Agent, InFlight, InvokeCall};

impl Agent {
    pub(crate) async fn run_hot(
        self: &Arc<Self>,
        call: InvokeCall,
        format: Format,
        record: &mut Call,
        queued: Instant,
    ) -> Result<Response<BoxBody>, Error> {
        let (pool, mut inst) = loop {
            let (pool, waiter) = self.pool_for(&call.app, &call.func, format);
            // `None`: the fn changed while the call waited; wait on its new pool.
            if let Some(inst) = self
                .acquire(&pool, waiter, &call.app, &call.func, &record.id, queued)
                .await?
            {
                break (pool, inst);
            }
        };
        record.status = CallStatus::Running;
        record.started_at = Some(DateTime::now());
        if let Some(cs) = &inst.cold {
            record.stats.insert(
                "cold_start".into(),
                serde_json::json!({
                    "reserve_us": cs.reserve.as_micros() as u64,
                    "start_us": cs.start.as_micros() as u64,
                    "ready_us": cs.ready.as_micros() as u64,
                }),
            );
        }
        let (_, _, req) = call.into_request(&record.id);
        inst.logs.begin(&record.id);
        let started = Instant::now();
        let result = match &mut inst.conn {
            Conn::HttpStream(c) => c.call(req).await,
            Conn::Stdio(c) => c.call(req).await,
        };
        if let (Some(cs), true) = (inst.cold.take(), result.is_ok()) {
            // The first call of a new instance: its cold start ends here.
            let t = cs.t0.elapsed();
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
                    && let Some(oom) = oom_error(inst.inst()).await
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

    /// Give an instance back after a call (or after its start), or end it.
    pub(crate) fn release(self: &Arc<Self>, pool: &Arc<Pool>, inst: HotInstance, ok: bool) {
        if !ok
            || self
                .shutting_down
                .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::spawn(inst.destroy());
            return;
        }
        match pool.put_idle(inst) {
            // Callers short of memory may now evict it.
            None => self.capacity.released.notify_waiters(),
            Some(inst) => {
                tokio::spawn(inst.destroy());
            }
        }
    }

    /// The pool of the fn's current version (retiring an older one), and
    /// the call counted as waiting there: taken under the pools' lock, so
    /// the reaper never removes a pool a call is about to use.
    fn pool_for(self: &Arc<Self>, app: &App, func: &Fn, format: Format) -> (Arc<Pool>, Waiter) {
        let version = Version {
            fn_updated: func.updated_at.as_millis(),
            app_updated: app.updated_at.as_millis(),
        };
        let mut pools = self.pools.lock();
        if let Some(p) = pools.get(&func.id)
            && p.version == version
        {
            return (Arc::clone(p), p.wait());
        }
        let pool = Arc::new(Pool::new(
            self.fn_calls.of(&func.id),
            version,
            format,
            func.memory,
            Duration::from_secs(func.idle_timeout.max(1) as u64),
        ));
        if let Some(old) = pools.insert(func.id.clone(), Arc::clone(&pool)) {
            for inst in old.retire() {
                tokio::spawn(inst.destroy());
            }
        }
        let waiter = pool.wait();
        (pool, waiter)
    }

    /// An idle instance of the pool, waiting at most `max_queue_wait` for
    /// one; launches starts as the module's policy says. A start this call
    /// launched that fails ends the call with its error. `None` when the
    /// pool was retired meanwhile.
    async fn acquire(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        mut waiter: Waiter,
        app: &Arc<App>,
        func: &Arc<Fn>,
        call_id: &str,
        queued: Instant,
    ) -> Result<Option<HotInstance>, Error> {
        let deadline = queued + self.config.max_queue_wait;
        let overdue_at = queued + self.config.hot_poll;
        let mut launched: Option<oneshot::Receiver<Error>> = None;
        // A call whose start went to a call queued before it waits one more
        // poll before it launches again (that call's own start may come).
        let mut relaunch_at = queued;
        let mut dead = Vec::new();
        loop {
            let freed = self.capacity.released.notified();
            let start_ended = pool.start_ended.notified();
            tokio::pin!(freed, start_ended);
            freed.as_mut().enable();
            start_ended.as_mut().enable();
            if self
                .shutting_down
                .load(std::sync::atomic::Ordering::Acquire)
            {
                // Pools are retired at shutdown: no new instances.
                return Err(ERR_BUSY);
            }
            if pool.is_retired() {
                return Ok(None);
            }
            let taken = waiter.take_or_queue(&mut dead);
            for d in dead.drain(..) {
                tokio::spawn(d.destroy());
            }
            if let Some(inst) = taken {
                return Ok(Some(self.taken(pool, queued, inst)));
            }
            if !waiter.is_overdue() && (pool.is_empty() || Instant::now() >= overdue_at) {
                waiter.mark_overdue();
            }
            if launched.is_none()
                && waiter.is_overdue()
                && Instant::now() >= relaunch_at
                && let Some(claim) = pool.claim_start()
            {
                tracing::debug!(fn_id = %func.id, demand = ?pool.demand(), waited_us = queued.elapsed().as_micros() as u64, "launching a start");
                match self.capacity.try_reserve(pool.memory_mb) {
                    Ok(res) => {
                        launched = Some(self.launch(pool, app, func, (claim, res), call_id, queued))
                    }
                    Err(short) => {
                        drop(claim);
                        if self.evict(short, Some(pool)).await {
                            continue;
                        }
                    }
                }
            }
            tokio::select! {
                biased;
                got = waiter.recv() => {
                    match got {
                        Some(inst) => return Ok(Some(self.taken(pool, queued, inst))),
                        // The pool was retired.
                        None => return Ok(None),
                    }
                }
                r = async { launched.as_mut().expect("guarded").await }, if launched.is_some() => {
                    match r {
                        Ok(e) => return Err(e),
                        // It started, and its instance went to a call
                        // queued first.
                        Err(_) => {
                            launched = None;
                            relaunch_at = Instant::now() + self.config.hot_poll;
                        }
                    }
                }
                _ = freed => {}
                _ = start_ended => {}
                _ = tokio::time::sleep_until(overdue_at), if !waiter.is_overdue() => {}
                _ = tokio::time::sleep_until(relaunch_at), if launched.is_none() && waiter.is_overdue() && Instant::now() < relaunch_at => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ERR_BUSY),
            }
        }
    }

    /// A call got `inst`: count its wait.
    fn taken(&self, pool: &Pool, queued: Instant, inst: HotInstance) -> HotInstance {
        pool.metrics
            .queue_wait
            .record(queued.elapsed().as_secs_f64());
        inst
    }

    /// Start an instance in a task of its own, for the pool: it survives
    /// the call that launched it. A failure goes to that call.
    fn launch(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
        app: &Arc<App>,
        func: &Arc<Fn>,
        (claim, reservation): (StartClaim, Reservation),
        call_id: &str,
        queued: Instant,
    ) -> oneshot::Receiver<Error> {
        let call_id = call_id.to_string();
        let (tx, rx) = oneshot::channel();
        let (agent, pool, app, func) = (
            Arc::clone(self),
            Arc::clone(pool),
            Arc::clone(app),
            Arc::clone(func),
        );
        let guard = InFlight::enter(self);
        tokio::spawn(async move {
            let started = agent
                .start_hot(&pool, &app, &func, reservation, &call_id, queued)
                .await;
            match started {
                Ok(inst) => agent.release(&pool, inst, true),
                Err(e) => {
                    let _ = tx.send(e);
                }
            }
            drop(claim);
            pool.start_ended.notify_waiters();
            drop(guard);
        });
        rx
    }

    /// End idle instances of other pools, oldest first, to free `bytes`.
    /// Returns whether anything was freed.
    pub(crate) async fn evict(&self, bytes: u64, except: Option<&Arc<Pool>>) -> bool {
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
        futures::future::join_all(victims.into_iter().map(HotInstance::destroy)).await;
        true
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
            None => pool.metrics.calls.add("success"),
            Some(e) => pool.metrics.calls.add(outcome_label(Some(e))),
        }
        pool.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        agent.recorder.call(record);
        agent.release(&pool, inst, ok);
    }
}
