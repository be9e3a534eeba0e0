//! Call records and logs are written off the request path: calls hand them to
//! the recorder, which writes whatever has gathered in one transaction per
//! batch (group commit). A sync call's answer never waits for the database.

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
/// Most records waiting to be written: when the store cannot keep up with
/// the calls (a slow or unreachable database), records beyond this are
/// dropped and counted (`fn_records_dropped_total`) instead of growing the
/// server's memory without bound.
const MAX_PENDING: usize = 50_000;

enum Record {
    Call(Box<Call>),
    Log(String, String, Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// The handle calls write through.
#[derive(Debug)]
pub(crate) struct Recorder {
    tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Record>>>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    dropped: AtomicUsize,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Record")
    }
}

impl Recorder {
    pub(crate) fn start(store: Arc<dyn Datastore>, keep_per_fn: u32) -> Arc<Self> {
        Self::start_with_limit(store, keep_per_fn, MAX_PENDING)
    }

    fn start_with_limit(
        store: Arc<dyn Datastore>,
        keep_per_fn: u32,
        max_pending: usize,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(store, rx, keep_per_fn, Arc::clone(&pending)));
        Arc::new(Self {
            tx: parking_lot::Mutex::new(Some(tx)),
            task: parking_lot::Mutex::new(Some(task)),
            pending,
            max_pending,
            dropped: AtomicUsize::new(0),
        })
    }

    fn send(&self, r: Record) {
        if !matches!(r, Record::Flush(_))
            && self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending
        {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("fn_records_dropped_total").increment(1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    pending = self.max_pending,
                    "call records are written slower than calls end: dropping records"
                );
            }
            return;
        }
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send(r);
        }
    }

    pub(crate) fn call(&self, call: Call) {
        self.send(Record::Call(Box::new(call)));
    }

    pub(crate) fn log(&self, call_id: String, fn_id: String, bytes: Vec<u8>) {
        self.send(Record::Log(call_id, fn_id, bytes));
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
    pending: Arc<AtomicUsize>,
) {
    let mut calls = Vec::new();
    let mut logs = Vec::new();
    let mut flushes = Vec::new();
    let mut last_prune = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        // A flush waits for nobody; a backlog is written at once.
        if !matches!(first, Record::Flush(_)) && pending.load(Ordering::Relaxed) < MAX_BATCH {
            gather(&pending).await;
        }
        let mut next = Some(first);
        let mut n = 0;
        while let Some(r) = next {
            if !matches!(r, Record::Flush(_)) {
                pending.fetch_sub(1, Ordering::Relaxed);
            }
            match r {
                Record::Call(c) => calls.push(*c),
                Record::Log(id, fn_id, b) => logs.push((id, fn_id, b)),
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

    /// Records beyond the limit of those waiting are dropped and counted;
    /// the others are all written.
    #[tokio::test]
    async fn records_beyond_the_pending_limit_are_dropped() {
        let (store, f) = store_with_fn().await;
        let rec = Recorder::start_with_limit(store.clone(), 0, 10);
        // The recorder's task cannot run before this test awaits: all 25
        // records arrive while none has been taken.
        for _ in 0..25 {
            rec.call(call(&f, &new_id()));
        }
        assert_eq!(rec.dropped.load(Ordering::Relaxed), 15);
        rec.flush().await;
        assert_eq!(rec.pending.load(Ordering::Relaxed), 0);
        // Room again once written.
        rec.call(call(&f, &new_id()));
        rec.close().await;
        let listed = calls_of(&store, &f).await;
        assert_eq!(listed.len(), 11);
        assert_eq!(rec.dropped.load(Ordering::Relaxed), 15);
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
        let rec = Recorder::start_with_limit(store.clone(), 0, 10_000);
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
}
