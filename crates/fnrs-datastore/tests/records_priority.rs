//! The SQLite record writer's thread runs at nice 19 while the recorder keeps
//! up and at normal priority while it is behind. One test in its own binary
//! (process): the writer's thread is told apart from the other sqlx threads
//! by which one appears while its pool connects, so no other store may be
//! opening meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use fnrs_datastore::conformance::{app, call, func};
use fnrs_datastore::{CachedStore, Datastore, SqlOptions, SqlStore};
use fnrs_model::new_id;

/// Thread ids of this process whose name starts like sqlx's SQLite workers
/// (`sqlx-sqlite-worker-N`, cut to 15 bytes by Linux).
fn sqlx_threads() -> HashSet<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|c| c.starts_with("sqlx-sqlite-wor"))
        })
        .collect()
}

/// A thread's nice value: field 19 of its `stat` (fields counted after the
/// name in parentheses, which may hold spaces and parentheses).
fn nice(tid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    // rest: field 3 (state) onwards, so field 19 is the 17th.
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// Whether this process may raise a thread's priority back from 19 to 0
/// (CAP_SYS_NICE effective, or RLIMIT_NICE of 20 or more), read
/// independently of the store's own probe.
fn may_raise_priority() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let cap = u64::from_str_radix(hex, 16).unwrap() & (1 << 23) != 0;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max nice priority"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap();
    cap || soft == "unlimited" || soft.parse::<u64>().is_ok_and(|n| n >= 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_record_writer_is_low_priority_while_not_behind() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite3://{}", dir.path().join("fn.db").display());
    let before = sqlx_threads();
    let store = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .unwrap();
    let opened: HashSet<i32> = sqlx_threads().difference(&before).copied().collect();
    // A writer, at least one reader and the record writer.
    assert!(opened.len() >= 3, "sqlx threads opened: {opened:?}");
    let a = app("prio");
    store.insert_app(&a).await.unwrap();
    let f = func(&a.id, "f");
    store.insert_fn(&f).await.unwrap();
    // Through the wrappers the server uses.
    let shared: Arc<dyn Datastore> = Arc::new(CachedStore::new(store.clone()));

    let writer = store.records_writer_thread();
    let privileged = may_raise_priority();
    if privileged {
        let tid = writer.expect("record writer thread identified");
        assert!(opened.contains(&tid), "{tid} not among {opened:?}");
        assert_eq!(nice(tid), 19, "an idle store writes at low priority");
        for &other in opened.iter().filter(|&&t| t != tid) {
            assert_eq!(nice(other), 0, "only the record writer is slowed");
        }
        shared.records_behind(true);
        assert_eq!(nice(tid), 0, "behind: normal priority");
        shared.records_behind(true);
        assert_eq!(nice(tid), 0);
        shared.records_behind(false);
        assert_eq!(nice(tid), 19, "caught up: low priority again");
    } else {
        assert_eq!(writer, None, "without the privilege the feature is off");
        shared.records_behind(false);
        shared.records_behind(true);
        shared.records_behind(false);
        for &tid in &opened {
            assert_eq!(nice(tid), 0);
        }
    }

    // Records are still written, on the same thread, at either priority.
    let mut ids = Vec::new();
    for behind in [false, true, false] {
        let id = new_id();
        shared.records_behind(behind);
        shared.put_records(&[call(&f, &id)], &[]).await.unwrap();
        ids.push(id);
    }
    for id in &ids {
        let got = shared.get_call(&f.id, id).await.unwrap();
        assert_eq!(&got.id, id);
    }
    if let Some(tid) = writer {
        assert_eq!(store.records_writer_thread(), Some(tid));
        assert_eq!(nice(tid), 19);
        assert!(sqlx_threads().contains(&tid), "the writer kept its thread");
    }
    store.close().await;
}
