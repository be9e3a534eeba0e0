//! Hot instances, pooled per fn version (contract §5.2).
//!
//! A pool belongs to one fn as it is now: a change to the fn or its app (any
//! field, which bumps `updated_at`) retires the pool, so new calls start new
//! instances with the new settings while the old ones finish and go away.
//! Idle instances are taken most recently idle first (LIFO), so surplus ones
//! stay idle and expire.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fnrs_driver::Instance;
use fnrs_protocol::{Format, HttpStreamConn, StdioConn};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::instance::Owned;
use crate::logs::LogHandle;

/// What identifies the fn version a pool serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub fn_updated: i64,
    pub app_updated: i64,
}

/// How the agent talks to a hot instance.
pub(crate) enum Conn {
    HttpStream(HttpStreamConn),
    Stdio(StdioConn),
}

/// A started, ready instance with everything it holds. Dropping it ends
/// the instance (see [`Owned`]).
pub(crate) struct HotInstance {
    pub owned: Owned,
    pub conn: Conn,
    pub logs: LogHandle,
    pub idle_since: Instant,
    /// Its start's phases, until its first call records them.
    pub cold: Option<ColdStart>,
    /// Counts it among its pool's instances while it lives.
    pub _member: Member,
}

/// The phases of an instance's start, for its first call's record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColdStart {
    /// When the start began (the first call's first byte ends it).
    pub t0: Instant,
    pub reserve: Duration,
    pub start: Duration,
    pub ready: Duration,
}

impl HotInstance {
    pub(crate) fn inst(&self) -> &Arc<dyn Instance> {
        self.owned.inst()
    }

    /// Whether the process/container has exited (checked without waiting).
    pub(crate) fn has_exited(&self) -> bool {
        self.inst().wait().now_or_never().is_some()
    }

    /// Whether it cannot take a call: exited, or a stdin/stdout instance
    /// that wrote between calls (its next answer could be an old one).
    fn unusable(&mut self) -> bool {
        self.has_exited()
            || match &mut self.conn {
                Conn::Stdio(c) => c.has_stray_output(),
                Conn::HttpStream(_) => false,
            }
    }

    /// End it and wait until it is gone.
    pub(crate) async fn destroy(self) {
        self.logs.end();
        self.owned.destroy().await;
    }
}

/// One live instance of a pool (idle or busy), counted while it lives.
pub(crate) struct Member(Arc<AtomicUsize>);

impl Drop for Member {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Calls waiting for an instance of a pool and starts under way: what
/// decides whether a waiting call launches a start (see [`Pool::claim_start`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demand {
    pub waiting: usize,
    /// Waiting calls past the launch delay (or that found no instance at all).
    pub overdue: usize,
    pub starting: usize,
}

impl Demand {
    /// Fn's rule: start while fewer starts are under way than calls want
    /// one (here: calls overdue), so N waiting calls launch at most N starts.
    pub(crate) fn wants_start(&self) -> bool {
        self.starting < self.overdue
    }
}

/// Idle instances, the calls queued for one (first come first served;
/// never both at once) and the demand they make. One lock: an instance
/// handed to a call stops counting that call as waiting at once.
#[derive(Default)]
struct Slots {
    idle: Vec<HotInstance>,
    queue: VecDeque<(oneshot::Sender<HotInstance>, Arc<WaitState>)>,
    demand: Demand,
}

impl Slots {
    /// A waiting call got an instance (or left): it counts no more.
    fn served(&mut self, w: &WaitState) {
        if !w.served.swap(true, Ordering::Relaxed) {
            self.demand.waiting -= 1;
            if w.overdue.load(Ordering::Relaxed) {
                self.demand.overdue -= 1;
            }
        }
    }
}

/// One waiting call's part of the demand (changed under the slots' lock).
#[derive(Default)]
struct WaitState {
    overdue: AtomicBool,
    served: AtomicBool,
}

/// The instances of one fn version.
pub(crate) struct Pool {
    pub version: Version,
    pub format: Format,
    pub memory_mb: u64,
    pub idle_timeout: Duration,
    slots: Mutex<Slots>,
    /// Woken when a start ends: a call that counted on it may want its own.
    pub start_ended: Notify,
    retired: AtomicBool,
    /// Live instances (idle or busy).
    members: Arc<AtomicUsize>,
    /// The metric handles every call of this pool updates, looked up once.
    pub metrics: PoolMetrics,
}

/// Handles of the per-call metrics (the fn's `fn_calls_total`, call
/// duration, queue wait).
pub(crate) struct PoolMetrics {
    pub calls: Arc<crate::fncalls::Counts>,
    pub duration: metrics::Histogram,
    pub queue_wait: metrics::Histogram,
}

impl Pool {
    pub(crate) fn new(
        calls: Arc<crate::fncalls::Counts>,
        version: Version,
        format: Format,
        memory_mb: u64,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            version,
            format,
            memory_mb,
            idle_timeout,
            slots: Mutex::new(Slots::default()),
            start_ended: Notify::new(),
            retired: AtomicBool::new(false),
            members: Arc::new(AtomicUsize::new(0)),
            metrics: PoolMetrics {
                calls,
                duration: metrics::histogram!("fn_call_duration_seconds"),
                queue_wait: metrics::histogram!("fn_queue_wait_seconds"),
            },
        }
    }

    /// Count a new instance as this pool's.
    pub(crate) fn member(&self) -> Member {
        self.members.fetch_add(1, Ordering::AcqRel);
        Member(Arc::clone(&self.members))
    }

    /// Whether the pool has no instance, not even one starting: a waiting
    /// call then launches one at once.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.load(Ordering::Acquire) == 0 && self.slots.lock().demand.starting == 0
    }

    /// Whether no instance lives, no call waits and no start is under way
    /// (the pool can go).
    pub(crate) fn is_unused(&self) -> bool {
        self.members.load(Ordering::Acquire) == 0 && self.slots.lock().demand == Demand::default()
    }

    pub(crate) fn demand(&self) -> Demand {
        self.slots.lock().demand
    }

    /// A call begins to wait for an instance.
    pub(crate) fn wait(self: &Arc<Self>) -> Waiter {
        self.slots.lock().demand.waiting += 1;
        Waiter {
            pool: Arc::clone(self),
            state: Arc::default(),
            rx: None,
        }
    }

    /// Reserve the right to launch one start, if demand wants one.
    pub(crate) fn claim_start(self: &Arc<Self>) -> Option<StartClaim> {
        let mut slots = self.slots.lock();
        if !slots.demand.wants_start() {
            return None;
        }
        slots.demand.starting += 1;
        Some(StartClaim(Arc::clone(self)))
    }

    /// Put an instance back: to the call queued first, else idle. A retired
    /// pool hands it back for teardown.
    pub(crate) fn put_idle(&self, mut inst: HotInstance) -> Option<HotInstance> {
        if self.is_retired() {
            return Some(inst);
        }
        let mut slots = self.slots.lock();
        while let Some((tx, w)) = slots.queue.pop_front() {
            match tx.send(inst) {
                Ok(()) => {
                    slots.served(&w);
                    return None;
                }
                // That call left.
                Err(back) => inst = back,
            }
        }
        inst.idle_since = Instant::now();
        slots.idle.push(inst);
        None
    }

    /// Remove idle instances that expired or exited.
    pub(crate) fn reap(&self, now: Instant) -> Vec<HotInstance> {
        let mut slots = self.slots.lock();
        let idle = &mut slots.idle;
        let mut out = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            if now.duration_since(idle[i].idle_since) >= self.idle_timeout || idle[i].has_exited() {
                out.push(idle.remove(i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Remove idle instances, oldest first, until `bytes` of memory would be
    /// freed (or none is left).
    pub(crate) fn evict(&self, bytes: u64, out: &mut Vec<HotInstance>) -> u64 {
        let mut slots = self.slots.lock();
        let idle = &mut slots.idle;
        let mut freed = 0;
        while freed < bytes && !idle.is_empty() {
            let inst = idle.remove(0);
            freed += self.memory_mb * 1024 * 1024;
            out.push(inst);
        }
        freed
    }

    /// The oldest idle time in this pool, for eviction order.
    pub(crate) fn oldest_idle(&self) -> Option<Instant> {
        self.slots.lock().idle.first().map(|i| i.idle_since)
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.slots.lock().idle.len()
    }

    /// Stop reusing this pool's instances; returns the idle ones (and
    /// drops the queue: its calls see the pool gone).
    pub(crate) fn retire(&self) -> Vec<HotInstance> {
        self.retired.store(true, Ordering::Release);
        let mut slots = self.slots.lock();
        slots.queue.clear();
        std::mem::take(&mut slots.idle)
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// A call waiting for an instance of the pool; counted in its demand until
/// it gets one or leaves.
pub(crate) struct Waiter {
    pool: Arc<Pool>,
    state: Arc<WaitState>,
    /// Its place in the queue, once it has one.
    rx: Option<oneshot::Receiver<HotInstance>>,
}

impl Waiter {
    pub(crate) fn is_overdue(&self) -> bool {
        self.state.overdue.load(Ordering::Relaxed)
    }

    /// The call now wants a start of its own.
    pub(crate) fn mark_overdue(&mut self) {
        let mut slots = self.pool.slots.lock();
        if !self.state.served.load(Ordering::Relaxed)
            && !self.state.overdue.swap(true, Ordering::Relaxed)
        {
            slots.demand.overdue += 1;
        }
    }

    /// The most recently idle live instance, or (`None`) a place in the
    /// queue for the next one. Dead ones found on the way (and ones that
    /// wrote between calls) are returned for teardown.
    pub(crate) fn take_or_queue(&mut self, dead: &mut Vec<HotInstance>) -> Option<HotInstance> {
        if self.rx.is_some() {
            return None;
        }
        let mut slots = self.pool.slots.lock();
        while let Some(mut inst) = slots.idle.pop() {
            if inst.unusable() {
                dead.push(inst);
            } else {
                slots.served(&self.state);
                return Some(inst);
            }
        }
        let (tx, rx) = oneshot::channel();
        slots.queue.push_back((tx, Arc::clone(&self.state)));
        self.rx = Some(rx);
        None
    }

    /// The instance handed to this call's place, or `None` when the pool
    /// dropped its queue (it was retired; the call may queue again).
    pub(crate) async fn recv(&mut self) -> Option<HotInstance> {
        let got = match self.rx.as_mut() {
            Some(rx) => rx.await.ok(),
            None => std::future::pending().await,
        };
        self.rx = None;
        got
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            // Handed over after the call stopped listening: give it back
            // (a retired pool's instance ends in its drop).
            if let Ok(inst) = rx.try_recv() {
                let _ = self.pool.put_idle(inst);
            }
        }
        self.pool.slots.lock().served(&self.state);
    }
}

/// A start under way, counted in its pool's demand while it lives.
pub(crate) struct StartClaim(Arc<Pool>);

impl Drop for StartClaim {
    fn drop(&mut self) {
        self.0.slots.lock().demand.starting -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<Pool> {
        Arc::new(Pool::new(
            Arc::default(),
            Version {
                fn_updated: 0,
                app_updated: 0,
            },
            Format::HttpStream,
            128,
            Duration::from_secs(30),
        ))
    }

    #[test]
    fn waiting_calls_launch_at_most_one_start_each_once_overdue() {
        let p = pool();
        assert!(p.is_empty() && p.is_unused());
        let mut waiters: Vec<Waiter> = (0..3).map(|_| p.wait()).collect();
        assert!(p.claim_start().is_none(), "nobody is overdue yet");
        waiters[0].mark_overdue();
        waiters[0].mark_overdue();
        assert_eq!(p.demand().overdue, 1, "marking twice counts once");
        let first = p.claim_start().expect("one overdue call, no start");
        assert!(!p.is_empty(), "a start is under way");
        assert!(p.claim_start().is_none(), "one start per overdue call");
        waiters[1].mark_overdue();
        waiters[2].mark_overdue();
        let more: Vec<_> = (0..5).filter_map(|_| p.claim_start()).collect();
        assert_eq!(more.len(), 2, "three overdue calls, three starts in all");
        drop(first);
        drop(more);
        waiters.truncate(1);
        assert_eq!(
            p.demand(),
            Demand {
                waiting: 1,
                overdue: 1,
                starting: 0
            }
        );
        drop(waiters);
        assert!(p.is_unused());
        let m = p.member();
        assert!(!p.is_empty() && !p.is_unused());
        drop(m);
        assert!(p.is_empty());
    }
}
