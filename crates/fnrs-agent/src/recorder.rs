//! Call records and logs are written off the request path: calls hand them to
//! the recorder, which writes whatever has gathered in one transaction per
//! batch (group commit). A sync call's answer never waits for the database.
//! What waits is bounded by bytes, not count (a log may be 1 MiB): see
//! [`DEFAULT_BACKLOG_BYTES`] for what is dropped when the store falls behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fnrs_datastore::Datastore;
use fnrs_model::Call;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;
/// Records gather before a write, so that one commit covers many calls: on
/// SQLite a transaction costs ≈ 100 µs of CPU (≈ 300 µs when SQLite's worker
/// thread runs on another core: each statement is a hand-off to it), a
/// record 6–10 µs (`cargo bench -p fnrs-datastore --bench records`). They
/// gather in steps of `GATHER_STEP` until `GATHER_ENOUGH` wait or
/// `GATHER_MAX` has passed: at 1 000 calls/s a batch holds 100 records
/// rather than 20, while under heavy load batches stay small enough (≈ 1 ms
/// of writing) not to stall the calls sharing the CPU. Skipped while records
/// wait beyond a batch, so gathering never limits how fast they are written.
const GATHER_STEP: Duration = Duration::from_millis(20);
/// The longest a record waits for others (see [`GATHER_STEP`]).
const GATHER_MAX: Duration = Duration::from_millis(100);
/// Records that make a batch worth writing at once (see [`GATHER_STEP`]).
const GATHER_ENOUGH: usize = 64;
/// How often old call records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most bytes of records and logs held between a call handing them over and
/// their write's end (`FN_RECORDER_BACKLOG_BYTES`): when the store cannot
/// keep up (a slow or unreachable database), the server's memory stays
/// bounded. What is beyond is dropped, never waited for (a call's answer
/// never waits for the database): logs first, once they hold
/// [`LOG_SHARE_PERCENT`] of the bound (`fn_logs_dropped_total`); call
/// records only when the whole bound is taken (`fn_records_dropped_total`).
pub const DEFAULT_BACKLOG_BYTES: usize = 64 << 20;
/// The share of the backlog's bound logs may take; the rest is kept for
/// call records (≈ 30 000 of them at the default bound).
const LOG_SHARE_PERCENT: usize = 75;

enum Record {
    Call(Box<Call>, usize),
    Log(String, String, Vec<u8>, usize),
    Flush(oneshot::Sender<()>),
}

/// What a record holds in memory, roughly: what the backlog counts.
fn call_bytes(c: &Call) -> usize {
    std::mem::size_of::<Call>()
        + c.id.len()
        + c.app_id.len()
        + c.fn_id.len()
        + c.trigger_id.as_ref().map_or(0, String::len)
        + c.method.len()
        + c.url.len()
        + c.error.as_ref().map_or(0, String::len)
        // A stats entry: a short key and a small value.
        + c.stats.len() * 96
}

fn log_bytes(call_id: &str, fn_id: &str, bytes: &Vec<u8>) -> usize {
    std::mem::size_of::<(String, String, Vec<u8>)>()
        + call_id.len()
        + fn_id.len()
        + bytes.capacity()
}

/// Counts shared by the handle and the writing task.
#[derive(Debug, Default)]
struct Backlog {
    /// Records sent and not yet taken by the writer (batching decisions).
    pending: AtomicUsize,
    /// Bytes of records sent and not yet written (or dropped by a failed
    /// write): those waiting and those being written.
    bytes: AtomicUsize,
}

/// The handle calls write through.
#[derive(Debug)]
pub(crate) struct Recorder {
    tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Record>>>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    backlog: Arc<Backlog>,
    max_bytes: usize,
    dropped_calls: AtomicUsize,
    dropped_logs: AtomicUsize,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Record")
    }
}

impl Recorder {
    /// A recorder with the default backlog bound ([`DEFAULT_BACKLOG_BYTES`]).
    #[cfg(test)]
    pub(crate) fn start(store: Arc<dyn Datastore>, keep_per_fn: u32) -> Arc<Self> {
        Self::start_with_backlog(store, keep_per_fn, DEFAULT_BACKLOG_BYTES)
    }

    /// A recorder holding at most `max_bytes` of records and logs not yet
    /// written (`FN_RECORDER_BACKLOG_BYTES`; 0 = the default).
    pub(crate) fn start_with_backlog(
        store: Arc<dyn Datastore>,
        keep_per_fn: u32,
        max_bytes: usize,
    ) -> Arc<Self> {
        let max_bytes = if max_bytes == 0 {
            DEFAULT_BACKLOG_BYTES
        } else {
            max_bytes
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let task = tokio::spawn(run(store, rx, keep_per_fn, Arc::clone(&backlog)));
        Arc::new(Self {
            tx: parking_lot::Mutex::new(Some(tx)),
            task: parking_lot::Mutex::new(Some(task)),
            backlog,
            max_bytes,
            dropped_calls: AtomicUsize::new(0),
            dropped_logs: AtomicUsize::new(0),
        })
    }

    /// Bytes of records and logs held now (waiting or being written).
    #[cfg(test)]
    fn backlog_bytes(&self) -> usize {
        self.backlog.bytes.load(Ordering::Relaxed)
    }

    /// Takes `size` bytes of the backlog if they fit under `limit`.
    fn reserve(&self, size: usize, limit: usize) -> bool {
        self.backlog
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held.saturating_add(size) <= limit).then_some(held + size)
            })
            .is_ok()
    }

    fn send(&self, r: Record) {
        let admitted = match &r {
            Record::Flush(_) => true,
            Record::Call(_, size) => self.reserve(*size, self.max_bytes),
            Record::Log(_, _, _, size) => {
                self.reserve(*size, self.max_bytes / 100 * LOG_SHARE_PERCENT)
            }
        };
        if !admitted {
            let (counter, what, dropped) = match &r {
                Record::Call(..) => (
                    "fn_records_dropped_total",
                    "call records",
                    &self.dropped_calls,
                ),
                _ => ("fn_logs_dropped_total", "call logs", &self.dropped_logs),
            };
            metrics::counter!(counter).increment(1);
            let dropped = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    backlog_bytes = self.max_bytes,
                    "{what} are written slower than calls end: dropping {what}"
                );
            }
            return;
        }
        if !matches!(r, Record::Flush(_)) {
            self.backlog.pending.fetch_add(1, Ordering::Relaxed);
        }
        let unsent = match self.tx.lock().as_ref() {
            Some(tx) => tx.send(r).err().map(|e| e.0),
            None => Some(r),
        };
        // Closed: nothing will write it; give its bytes back.
        if let Some(r) = unsent {
            self.unsent(&r);
        }
    }

    fn unsent(&self, r: &Record) {
        let size = match r {
            Record::Call(_, n) | Record::Log(_, _, _, n) => *n,
            Record::Flush(_) => return,
        };
        self.backlog.pending.fetch_sub(1, Ordering::Relaxed);
        self.backlog.bytes.fetch_sub(size, Ordering::Relaxed);
    }

    pub(crate) fn call(&self, call: Call) {
        let size = call_bytes(&call);
        self.send(Record::Call(Box::new(call), size));
    }

    pub(crate) fn log(&self, call_id: String, fn_id: String, bytes: Vec<u8>) {
        let size = log_bytes(&call_id, &fn_id, &bytes);
        self.send(Record::Log(call_id, fn_id, bytes, size));
    }

    /// Wait until everything sent so far is written.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Record::Flush(tx));
        let _ = rx.await;
    }

    /// Write what is queued and stop.
    pub(crate) async fn close(&self) {
        drop(self.tx.lock().take());
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(
    store: Arc<dyn Datastore>,
    mut rx: mpsc::UnboundedReceiver<Record>,
    keep: u32,
    backlog: Arc<Backlog>,
) {
    let pending = &backlog.pending;
    let mut calls = Vec::new();
    let mut logs = Vec::new();
    let mut flushes = Vec::new();
    let mut last_prune = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        // A flush waits for nobody; a backlog is written at once.
        if !matches!(first, Record::Flush(_)) && pending.load(Ordering::Relaxed) < MAX_BATCH {
            gather(pending).await;
        }
        let mut next = Some(first);
        let mut n = 0;
        let mut bytes = 0;
        while let Some(r) = next {
            if !matches!(r, Record::Flush(_)) {
                pending.fetch_sub(1, Ordering::Relaxed);
            }
            match r {
                Record::Call(c, size) => {
                    calls.push(*c);
                    bytes += size;
                }
                Record::Log(id, fn_id, b, size) => {
                    logs.push((id, fn_id, b));
                    bytes += size;
                }
                Record::Flush(tx) => flushes.push(tx),
            }
            n += 1;
            next = if n < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !calls.is_empty() || !logs.is_empty() {
            // Behind: this batch was cut short, or more than a batch waits.
            // The store may run its writer at low priority while it is not.
            let behind = n >= MAX_BATCH || pending.load(Ordering::Relaxed) > MAX_BATCH;
            store.records_behind(behind);
            (calls, logs) = write_off_the_workers(&store, calls, logs, behind).await;
        }
        // Written (or failed): the batch's memory is free again.
        backlog.bytes.fetch_sub(bytes, Ordering::Relaxed);
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
        if keep > 0 && last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            match store.prune_calls(keep).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "pruned old call records"),
                Err(e) => tracing::warn!(error = %e, "pruning call records failed"),
            }
        }
    }
    // Closing: a server that ran less than a minute prunes too.
    if keep > 0
        && let Err(e) = store.prune_calls(keep).await
    {
        tracing::warn!(error = %e, "pruning call records failed");
    }
}

/// Wait while records gather (see [`GATHER_STEP`]); `pending` counts those
/// sent and not yet taken (the first one is taken).
async fn gather(pending: &AtomicUsize) {
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(GATHER_STEP).await;
        if pending.load(Ordering::Relaxed) + 1 >= GATHER_ENOUGH || start.elapsed() >= GATHER_MAX {
            return;
        }
    }
}

/// Write one batch on a blocking-pool thread rather than in this task: turning
/// a batch into statements (hundreds of values bound and copied) takes a
/// worker for a few hundred microseconds, and calls queued behind it on that
/// worker waited as long (it was most of the hot p99). On its own thread, at
/// nice 19 while the recorder keeps up, the kernel's scheduler lets a call's
/// thread run first. Gives the vectors back emptied, for reuse.
async fn write_off_the_workers(
    store: &Arc<dyn Datastore>,
    calls: Vec<Call>,
    logs: Vec<(String, String, Vec<u8>)>,
    behind: bool,
) -> (Vec<Call>, Vec<(String, String, Vec<u8>)>) {
    let (n_calls, n_logs) = (calls.len(), logs.len());
    let store = Arc::clone(store);
    let rt = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || {
        let write = || rt.block_on(store.put_records(&calls, &logs));
        // Like the SQLite writer: at low priority while the recorder keeps
        // up, at normal priority when it is behind.
        let r = if behind {
            write()
        } else {
            fnrs_datastore::at_low_priority(write)
        };
        (calls, logs, r)
    })
    .await;
    match written {
        Ok((mut calls, mut logs, r)) => {
            if let Err(e) = r {
                tracing::error!(error = %e, calls = n_calls, logs = n_logs, "writing call records failed");
            }
            calls.clear();
            logs.clear();
            (calls, logs)
        }
        Err(e) => {
            tracing::error!(error = %e, calls = n_calls, logs = n_logs, "writing call records failed");
            (Vec::new(), Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use fnrs_datastore::conformance::{app, call, func};
    use fnrs_datastore::{Datastore, MemoryStore};
    use fnrs_model::{CallFilter, new_id};

    use super::*;

    async fn store_with_fn() -> (Arc<MemoryStore>, fnrs_model::Fn) {
        let store = Arc::new(MemoryStore::new());
        let a = app("rec");
        store.insert_app(&a).await.unwrap();
        let f = func(&a.id, "f");
        store.insert_fn(&f).await.unwrap();
        (store, f)
    }

    async fn calls_of(store: &MemoryStore, f: &fnrs_model::Fn) -> Vec<Call> {
        store
            .list_calls(&CallFilter {
                fn_id: f.id.clone(),
                cursor: None,
                per_page: 0,
            })
            .await
            .unwrap()
    }

    /// Call records beyond the backlog's bytes are dropped and counted; the
    /// others are all written, and their bytes given back.
    #[tokio::test]
    async fn records_beyond_the_backlog_bytes_are_dropped() {
        let (store, f) = store_with_fn().await;
        let size = call_bytes(&call(&f, &new_id()));
        let rec = Recorder::start_with_backlog(store.clone(), 0, 10 * size);
        // The recorder's task cannot run before this test awaits: all 25
        // records arrive while none has been taken.
        for _ in 0..25 {
            rec.call(call(&f, &new_id()));
            assert!(rec.backlog_bytes() <= 10 * size);
        }
        assert_eq!(rec.dropped_calls.load(Ordering::Relaxed), 15);
        rec.flush().await;
        assert_eq!(rec.backlog_bytes(), 0);
        assert_eq!(rec.backlog.pending.load(Ordering::Relaxed), 0);
        // Room again once written.
        rec.call(call(&f, &new_id()));
        rec.close().await;
        let listed = calls_of(&store, &f).await;
        assert_eq!(listed.len(), 11);
        assert_eq!(rec.dropped_calls.load(Ordering::Relaxed), 15);
    }

    /// Logs take at most their share of the backlog: the rest is kept for
    /// call records, which still get in when logs no longer do.
    #[tokio::test]
    async fn logs_are_dropped_before_call_records() {
        let (store, f) = store_with_fn().await;
        let rec = Recorder::start_with_backlog(store.clone(), 0, 40_000);
        let mut ids = Vec::new();
        for _ in 0..10 {
            let id = new_id();
            rec.log(id.clone(), f.id.clone(), vec![b'l'; 10_000]);
            ids.push(id);
        }
        // 75 % of 40 000 bytes: two logs of 10 000 bytes and their ids.
        assert_eq!(rec.dropped_logs.load(Ordering::Relaxed), 8);
        for id in &ids {
            rec.call(call(&f, id));
        }
        assert_eq!(rec.dropped_calls.load(Ordering::Relaxed), 0);
        assert!(rec.backlog_bytes() <= 40_000);
        rec.close().await;
        assert_eq!(calls_of(&store, &f).await.len(), 10);
        assert_eq!(store.get_log(&ids[1]).await.unwrap().len(), 10_000);
        assert_eq!(
            store.get_log(&ids[2]).await.unwrap_err(),
            fnrs_model::Error::CALL_LOG_NOT_FOUND
        );
    }

    /// Records gather up to GATHER_MAX when few calls end, and are written
    /// after one GATHER_STEP when enough have gathered.
    #[tokio::test(start_paused = true)]
    async fn few_records_gather_longer_than_many() {
        let (store, f) = store_with_fn().await;
        let rec = Recorder::start(store.clone(), 0);
        let written = async |n: usize| {
            // Writes run on the blocking pool: give them real time.
            for _ in 0..200 {
                if calls_of(&store, &f).await.len() >= n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            false
        };
        let start = tokio::time::Instant::now();
        rec.call(call(&f, &new_id()));
        tokio::time::sleep(GATHER_MAX - GATHER_STEP).await;
        assert!(calls_of(&store, &f).await.is_empty(), "one record waits");
        assert!(written(1).await);
        assert!(start.elapsed() >= GATHER_MAX);

        let start = tokio::time::Instant::now();
        for _ in 0..GATHER_ENOUGH {
            rec.call(call(&f, &new_id()));
        }
        assert!(written(1 + GATHER_ENOUGH).await);
        let took = start.elapsed();
        assert!(took >= GATHER_STEP && took < 2 * GATHER_STEP, "{took:?}");
        rec.close().await;
    }

    /// A backlog of more than a batch is reported as behind (so that the
    /// store writes at full priority) until it is worked off.
    #[tokio::test]
    async fn a_backlog_is_reported_behind_until_written() {
        let (store, f) = store_with_fn().await;
        let rec = Recorder::start(store.clone(), 0);
        // All arrive before the recorder's task runs: batches of 512, 512
        // (both cut short, a backlog behind them) and the last 276.
        let total = 2 * MAX_BATCH + 276;
        for _ in 0..total {
            rec.call(call(&f, &new_id()));
        }
        rec.flush().await;
        assert_eq!(store.behind_reports(), (2, 1));
        // A single record later: not behind.
        rec.call(call(&f, &new_id()));
        rec.flush().await;
        assert_eq!(store.behind_reports(), (2, 2));
        rec.close().await;
        let listed = calls_of(&store, &f).await;
        assert_eq!(listed.len(), total + 1);
    }

    /// A real SQLite store whose writes wait until the test opens its gate
    /// (a database that has fallen behind), and that notes the largest
    /// batch of log bytes it was handed.
    struct Stuck {
        inner: fnrs_datastore::SqlStore,
        gate: tokio::sync::Semaphore,
        largest_logs: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Datastore for Stuck {
        async fn insert_app(&self, a: &fnrs_model::App) -> fnrs_datastore::Result<()> {
            self.inner.insert_app(a).await
        }
        async fn update_app(&self, a: &fnrs_model::App) -> fnrs_datastore::Result<()> {
            self.inner.update_app(a).await
        }
        async fn get_app(&self, id: &str) -> fnrs_datastore::Result<fnrs_model::App> {
            self.inner.get_app(id).await
        }
        async fn get_app_by_name(&self, n: &str) -> fnrs_datastore::Result<fnrs_model::App> {
            self.inner.get_app_by_name(n).await
        }
        async fn remove_app(&self, id: &str) -> fnrs_datastore::Result<()> {
            self.inner.remove_app(id).await
        }
        async fn list_apps(
            &self,
            f: &fnrs_model::AppFilter,
        ) -> fnrs_datastore::Result<Vec<fnrs_model::App>> {
            self.inner.list_apps(f).await
        }
        async fn insert_fn(&self, f: &fnrs_model::Fn) -> fnrs_datastore::Result<()> {
            self.inner.insert_fn(f).await
        }
        async fn update_fn(&self, f: &fnrs_model::Fn) -> fnrs_datastore::Result<()> {
            self.inner.update_fn(f).await
        }
        async fn get_fn(&self, id: &str) -> fnrs_datastore::Result<fnrs_model::Fn> {
            self.inner.get_fn(id).await
        }
        async fn remove_fn(&self, id: &str) -> fnrs_datastore::Result<()> {
            self.inner.remove_fn(id).await
        }
        async fn list_fns(
            &self,
            f: &fnrs_model::FnFilter,
        ) -> fnrs_datastore::Result<Vec<fnrs_model::Fn>> {
            self.inner.list_fns(f).await
        }
        async fn insert_trigger(&self, t: &fnrs_model::Trigger) -> fnrs_datastore::Result<()> {
            self.inner.insert_trigger(t).await
        }
        async fn update_trigger(&self, t: &fnrs_model::Trigger) -> fnrs_datastore::Result<()> {
            self.inner.update_trigger(t).await
        }
        async fn get_trigger(&self, id: &str) -> fnrs_datastore::Result<fnrs_model::Trigger> {
            self.inner.get_trigger(id).await
        }
        async fn get_trigger_by_source(
            &self,
            app_id: &str,
            kind: &str,
            source: &str,
        ) -> fnrs_datastore::Result<fnrs_model::Trigger> {
            self.inner.get_trigger_by_source(app_id, kind, source).await
        }
        async fn remove_trigger(&self, id: &str) -> fnrs_datastore::Result<()> {
            self.inner.remove_trigger(id).await
        }
        async fn list_triggers(
            &self,
            f: &fnrs_model::TriggerFilter,
        ) -> fnrs_datastore::Result<Vec<fnrs_model::Trigger>> {
            self.inner.list_triggers(f).await
        }
        async fn put_calls(&self, calls: &[Call]) -> fnrs_datastore::Result<()> {
            self.put_records(calls, &[]).await
        }
        async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> fnrs_datastore::Result<()> {
            self.put_records(&[], logs).await
        }
        async fn put_records(
            &self,
            calls: &[Call],
            logs: &[(String, String, Vec<u8>)],
        ) -> fnrs_datastore::Result<()> {
            let bytes = logs.iter().map(|(_, _, b)| b.len()).sum();
            self.largest_logs.fetch_max(bytes, Ordering::Relaxed);
            // One permit per batch: the test lets batches through.
            self.gate.acquire().await.unwrap().forget();
            self.inner.put_records(calls, logs).await
        }
        async fn get_call(&self, fn_id: &str, id: &str) -> fnrs_datastore::Result<Call> {
            self.inner.get_call(fn_id, id).await
        }
        async fn list_calls(&self, f: &CallFilter) -> fnrs_datastore::Result<Vec<Call>> {
            self.inner.list_calls(f).await
        }
        async fn get_log(&self, id: &str) -> fnrs_datastore::Result<Vec<u8>> {
            self.inner.get_log(id).await
        }
        async fn prune_calls(&self, keep: u32) -> fnrs_datastore::Result<u64> {
            self.inner.prune_calls(keep).await
        }
        async fn insert_pending(
            &self,
            c: &Call,
            p: &fnrs_model::PendingCall,
        ) -> fnrs_datastore::Result<()> {
            self.inner.insert_pending(c, p).await
        }
        async fn list_pending(&self) -> fnrs_datastore::Result<Vec<fnrs_model::PendingCall>> {
            self.inner.list_pending().await
        }
        async fn bump_pending_attempts(&self, id: &str) -> fnrs_datastore::Result<()> {
            self.inner.bump_pending_attempts(id).await
        }
        async fn remove_pending(&self, id: &str) -> fnrs_datastore::Result<()> {
            self.inner.remove_pending(id).await
        }
    }

    /// A store that cannot keep up with 1 MiB logs: what waits for it stays
    /// within the backlog's bytes; logs beyond their share are dropped and
    /// counted, call records are all written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_store_holds_no_more_than_the_backlog_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let sql = fnrs_datastore::SqlStore::connect(
            &format!("sqlite3://{}", dir.path().join("fn.db").display()),
            &fnrs_datastore::SqlOptions::default(),
        )
        .await
        .unwrap();
        let a = app("rec");
        sql.insert_app(&a).await.unwrap();
        let f = func(&a.id, "f");
        sql.insert_fn(&f).await.unwrap();
        let store = Arc::new(Stuck {
            inner: sql,
            gate: tokio::sync::Semaphore::new(0),
            largest_logs: AtomicUsize::new(0),
        });
        let rec = Recorder::start(store.clone(), 0);
        const LOG: usize = 1 << 20;
        let total_logs = 200;
        let mut ids = Vec::new();
        let mut most = 0;
        for _ in 0..total_logs {
            let id = new_id();
            rec.call(call(&f, &id));
            rec.log(id.clone(), f.id.clone(), vec![b'x'; LOG]);
            most = most.max(rec.backlog_bytes());
            ids.push(id);
        }
        assert!(most <= DEFAULT_BACKLOG_BYTES, "backlog of {most} bytes");
        let dropped = rec.dropped_logs.load(Ordering::Relaxed);
        assert!(
            dropped > 0 && dropped < total_logs,
            "{dropped} logs dropped"
        );
        assert_eq!(rec.dropped_calls.load(Ordering::Relaxed), 0);
        // The store catches up one batch at a time; the backlog drains.
        store.gate.add_permits(1 << 20);
        rec.flush().await;
        assert_eq!(rec.backlog_bytes(), 0);
        rec.close().await;
        let largest = store.largest_logs.load(Ordering::Relaxed);
        assert!(
            largest <= DEFAULT_BACKLOG_BYTES,
            "a batch held {largest} bytes of logs"
        );
        // Every call record was kept.
        assert_eq!(
            store
                .list_calls(&CallFilter {
                    fn_id: f.id.clone(),
                    cursor: None,
                    per_page: 0,
                })
                .await
                .unwrap()
                .len(),
            total_logs
        );
        // The logs that were let in are all there.
        let mut kept = 0;
        for id in &ids {
            match store.get_log(id).await {
                Ok(l) if l.len() == LOG => kept += 1,
                Ok(l) => panic!("a log of {} bytes", l.len()),
                Err(e) => assert_eq!(e, fnrs_model::Error::CALL_LOG_NOT_FOUND),
            }
        }
        assert_eq!(kept, total_logs - dropped);
    }
}
