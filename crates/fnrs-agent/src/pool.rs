//! Hot instances, pooled per fn version (contract §5.2).
//!
//! A pool belongs to one fn as it is now: a change to the fn or its app (any
//! field, which bumps `updated_at`) retires the pool, so new calls start new
//! instances with the new settings while the old ones finish and go away.
//! Idle instances are taken most recently idle first (LIFO), so surplus ones
//! stay idle and expire.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fnrs_driver::Instance;
use fnrs_protocol::{Format, HttpStreamConn, StdioConn};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::capacity::Reservation;
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

/// A started, ready instance with everything it holds.
pub(crate) struct HotInstance {
    pub id: String,
    pub inst: Arc<dyn Instance>,
    pub conn: Conn,
    pub logs: LogHandle,
    pub iofs_dir: Option<PathBuf>,
    pub reservation: Option<Reservation>,
    pub idle_since: Instant,
    /// When its start began, until its first call has its first byte (for
    /// the cold start's `first_byte` phase).
    pub cold_since: Option<Instant>,
}

impl HotInstance {
    /// Whether the process/container has exited (checked without waiting).
    pub(crate) fn has_exited(&self) -> bool {
        self.inst.wait().now_or_never().is_some()
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
}

/// The instances of one fn version.
pub(crate) struct Pool {
    pub version: Version,
    pub format: Format,
    pub memory_mb: u64,
    pub idle_timeout: Duration,
    idle: Mutex<Vec<HotInstance>>,
    /// One permit per instance put back idle.
    pub idle_ready: Notify,
    retired: AtomicBool,
    /// The metric handles every call of this pool updates, looked up once.
    pub metrics: PoolMetrics,
}

/// Handles of the per-call metrics (`fn_calls_total{outcome="success"}` of
/// the fn, call duration, queue wait).
pub(crate) struct PoolMetrics {
    pub success: metrics::Counter,
    pub duration: metrics::Histogram,
    pub queue_wait: metrics::Histogram,
}

impl Pool {
    pub(crate) fn new(
        fn_id: &str,
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
            idle: Mutex::new(Vec::new()),
            idle_ready: Notify::new(),
            retired: AtomicBool::new(false),
            metrics: PoolMetrics {
                success: metrics::counter!("fn_calls_total", "fn_id" => fn_id.to_owned(), "outcome" => "success"),
                duration: metrics::histogram!("fn_call_duration_seconds"),
                queue_wait: metrics::histogram!("fn_queue_wait_seconds"),
            },
        }
    }

    /// Take the most recently idle live instance. Dead ones found on the way
    /// (and ones that wrote between calls) are returned for teardown.
    pub(crate) fn take_idle(&self, dead: &mut Vec<HotInstance>) -> Option<HotInstance> {
        let mut idle = self.idle.lock();
        while let Some(mut inst) = idle.pop() {
            if inst.unusable() {
                dead.push(inst);
            } else {
                return Some(inst);
            }
        }
        None
    }

    /// Put an instance back; a retired pool hands it back for teardown.
    pub(crate) fn put_idle(&self, mut inst: HotInstance) -> Option<HotInstance> {
        if self.is_retired() {
            return Some(inst);
        }
        inst.idle_since = Instant::now();
        self.idle.lock().push(inst);
        self.idle_ready.notify_one();
        None
    }

    /// Remove idle instances that expired or exited.
    pub(crate) fn reap(&self, now: Instant) -> Vec<HotInstance> {
        let mut idle = self.idle.lock();
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
        let mut idle = self.idle.lock();
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
        self.idle.lock().first().map(|i| i.idle_since)
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Stop reusing this pool's instances; returns the idle ones.
    pub(crate) fn retire(&self) -> Vec<HotInstance> {
        self.retired.store(true, Ordering::Release);
        std::mem::take(&mut *self.idle.lock())
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}
