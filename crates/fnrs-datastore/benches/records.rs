//! What writing call records costs: `put_records` of batches of finished
//! calls, each with its log line (as the agent's recorder sends them), into a
//! SQLite file, by batch size. Prints microseconds per record; no assertions.
//!
//! `cargo bench -p fnrs-datastore --bench records [-- RECORDS]`

use std::time::{Duration, Instant};

use fnrs_datastore::conformance::{app, call, func};
use fnrs_datastore::{Datastore, SqlOptions, SqlStore};
use fnrs_model::{Call, IdGenerator};

/// A log chunk as the recorder hands it over: call id, fn id, bytes.
type Log = (String, String, Vec<u8>);

/// One batch: `n` calls of `f` and, when `logs`, one log line for each.
fn batch(ids: &IdGenerator, f: &fnrs_model::Fn, n: usize, logs: bool) -> (Vec<Call>, Vec<Log>) {
    let calls: Vec<Call> = (0..n).map(|_| call(f, &ids.next_id())).collect();
    let logs = if logs {
        calls
            .iter()
            .map(|c| {
                let line = format!("{} - hello from rust-hello\n", c.id);
                (c.id.clone(), c.fn_id.clone(), line.into_bytes())
            })
            .collect()
    } else {
        Vec::new()
    };
    (calls, logs)
}

/// This process's CPU time so far (all threads, the SQLite worker's too).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn report(what: &str, rows: usize, wall: Duration, cpu: Duration) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / rows as f64;
    println!(
        "{what:<36} {rows:>7} records  {:>7.2} µs/record  CPU {:>7.2} µs/record",
        per(wall),
        per(cpu)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(16_384);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite3://{}", dir.path().join("fn.db").display());
    let store = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .expect("open SQLite");
    let a = app("bench");
    store.insert_app(&a).await.expect("app");
    let f = func(&a.id, "hot");
    store.insert_fn(&f).await.expect("fn");
    let ids = IdGenerator::new(0x00be_4c40);
    // Warm up: the statement cache and the file's first pages.
    for _ in 0..8 {
        let (c, l) = batch(&ids, &f, 64, true);
        store.put_records(&c, &l).await.expect("put records");
    }
    for logs in [true, false] {
        for size in [1, 16, 64, 256] {
            let batches = (total / size).max(1);
            let mut spent = Duration::ZERO;
            let cpu = cpu_time();
            for _ in 0..batches {
                let (c, l) = batch(&ids, &f, size, logs);
                let t = Instant::now();
                store.put_records(&c, &l).await.expect("put records");
                spent += t.elapsed();
            }
            let what = format!(
                "batches of {size}{}",
                if logs {
                    ", a log line each"
                } else {
                    ", no logs"
                }
            );
            report(&what, batches * size, spent, cpu_time() - cpu);
        }
    }
}
