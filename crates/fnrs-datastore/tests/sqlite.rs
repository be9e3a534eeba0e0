//! The SQL store on real SQLite files in temp dirs.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use fnrs_datastore::{
    Datastore, SqlOptions, SqlStore, StoreError, conformance,
    conformance::{app, func},
};
use sqlx::Connection;

fn url_in(dir: &tempfile::TempDir, rel: &str) -> String {
    format!("sqlite3://{}", dir.path().join(rel).display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&url_in(&dir, "fn.db"), &SqlOptions::default())
        .await
        .unwrap();
    conformance::run_all(Arc::new(store.clone())).await;
    store.close().await;
}

#[tokio::test]
async fn fresh_file_gets_schema_wal_and_private_parent_dir() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir, "nested/deeper/fn.db");
    let store = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .unwrap();
    let parent = dir.path().join("nested/deeper");
    assert!(parent.join("fn.db").is_file());
    for d in [dir.path().join("nested"), parent.clone()] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750, "{}", d.display());
    }
    store.close().await;

    // Look inside with a plain connection.
    sqlx::any::install_default_drivers();
    let raw = format!("sqlite://{}", parent.join("fn.db").display());
    let mut conn = sqlx::AnyConnection::connect(&raw).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "apps",
            "call_logs",
            "calls",
            "fns",
            "pending_calls",
            "triggers"
        ]
    );
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied, [1, 2]);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn reopened_file_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir, "fn.db");
    let a = app("kept");
    let f = func(&a.id, "f");
    let queued = conformance::call(&f, &fnrs_model::new_id());
    let pending = fnrs_model::PendingCall {
        call_id: queued.id.clone(),
        fn_id: f.id.clone(),
        trigger_id: None,
        method: "POST".into(),
        url: queued.url.clone(),
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: b"payload".to_vec(),
        attempts: 0,
    };
    {
        let store = SqlStore::connect(&url, &SqlOptions::default())
            .await
            .unwrap();
        store.insert_app(&a).await.unwrap();
        store.insert_fn(&f).await.unwrap();
        store.insert_pending(&queued, &pending).await.unwrap();
        store
            .put_logs(&[(queued.id.clone(), f.id.clone(), b"log".to_vec())])
            .await
            .unwrap();
        store.close().await;
    }
    // Both URL spellings open the same file; migrations are not re-applied.
    let again = url.replacen("sqlite3://", "sqlite://", 1);
    let store = SqlStore::connect(&again, &SqlOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap(), a);
    assert_eq!(store.get_fn(&f.id).await.unwrap(), f);
    // A detached call accepted before the restart is still there to run.
    assert_eq!(store.list_pending().await.unwrap(), [pending]);
    assert_eq!(store.get_call(&f.id, &queued.id).await.unwrap(), queued);
    assert_eq!(store.get_log(&queued.id).await.unwrap(), b"log");
    store.close().await;
}

#[tokio::test]
async fn write_is_durable_without_close() {
    // An acknowledged write is committed: a second store on the same file
    // (another process would see the same) reads it while the first is open.
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir, "fn.db");
    let first = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .unwrap();
    let a = app("durable");
    first.insert_app(&a).await.unwrap();
    let second = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .unwrap();
    assert_eq!(second.get_app(&a.id).await.unwrap(), a);
    // And writes from both interleave (busy timeout, not "database is locked").
    second.insert_app(&app("from-second")).await.unwrap();
    first.insert_app(&app("from-first")).await.unwrap();
    assert_eq!(
        first.get_app_by_name("from-second").await.unwrap().name,
        "from-second"
    );
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn bad_urls_fail_clearly() {
    let e = SqlStore::connect("mysql://u:pw@tcp(h:3306)/fn", &SqlOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::BadUrl(_)), "{e}");
    assert!(e.to_string().contains("unsupported database scheme"), "{e}");
    assert!(!e.to_string().contains("pw"), "{e}");

    // A parent that cannot be a directory.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let url = url_in(&dir, "file/fn.db");
    let e = SqlStore::connect(&url, &SqlOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::CreateDir { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&url_in(&dir, "fn.db"), &SqlOptions::default())
        .await
        .unwrap();
    conformance::run_all(Arc::new(fnrs_datastore::CachedStore::new(store.clone()))).await;
    store.close().await;
}

const KILL_CHILD_ENV: &str = "FNRS_DS_KILL_CHILD_URL";

/// Run only by `acknowledged_writes_survive_sigkill`, in a child process:
/// inserts apps and prints each id once the insert has returned.
#[test]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
fn sigkill_child() {
    use std::io::Write;
    let Ok(url) = std::env::var(KILL_CHILD_ENV) else {
        eprintln!("nothing to do: run by acknowledged_writes_survive_sigkill");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqlStore::connect(&url, &SqlOptions::default())
            .await
            .unwrap();
        let mut out = std::io::stdout().lock();
        for i in 0..100_000 {
            let a = app(&format!("k{i:06}"));
            store.insert_app(&a).await.unwrap();
            writeln!(out, "acked {}", a.id).unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let url = url_in(&dir, "fn.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "sigkill_child", "--nocapture"])
        .env(KILL_CHILD_ENV, &url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if let Some(id) = line.unwrap().strip_prefix("acked ") {
            acked.push(id.to_string());
            if acked.len() == 200 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL, mid-write
    child.wait().unwrap();
    assert_eq!(acked.len(), 200, "the child stopped early");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqlStore::connect(&url, &SqlOptions::default())
            .await
            .unwrap();
        for id in &acked {
            store.get_app(id).await.unwrap();
        }
        store.close().await;
    });
}

/// A file made by the first schema (every log chunk in `call_logs`) is
/// upgraded in place: its logs still read, and what comes later (a log
/// with the call's record, an append) goes after them.
#[tokio::test]
async fn first_schema_file_is_upgraded_with_its_logs() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fn.db");
    sqlx::any::install_default_drivers();
    {
        let mut conn =
            sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        Migrator::with_migrations(vec![Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str(include_str!("../migrations/sqlite/0001_init.sql")),
            false,
        )])
        .run(&mut conn)
        .await
        .unwrap();
        let at = "2019-04-11T16:26:40.123Z";
        for sql in [
            format!(
                "INSERT INTO apps VALUES ('a1', 'app', '{{}}', '{{}}', NULL, '', '{at}', '{at}')"
            ),
            format!(
                "INSERT INTO fns VALUES ('f1', 'a1', 'f', 'img', NULL, 128, 30, 30, '{{}}', \
                 '{{}}', '', '{at}', '{at}')"
            ),
            "INSERT INTO call_logs (call_id, fn_id, data) VALUES ('c1', 'f1', X'6F6C6420'), \
             ('c2', 'f1', X'00'), ('c1', 'f1', X'6F6E6520')"
                .to_string(),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }
    let store = SqlStore::connect(
        &format!("sqlite3://{}", path.display()),
        &SqlOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(store.get_log("c1").await.unwrap(), b"old one ");
    let f = store.get_fn("f1").await.unwrap();
    let c1 = conformance::call(&f, "c1");
    store
        .put_records(
            std::slice::from_ref(&c1),
            &[("c1".into(), "f1".into(), b"new".to_vec())],
        )
        .await
        .unwrap();
    store
        .put_logs(&[("c1".into(), "f1".into(), b"!".to_vec())])
        .await
        .unwrap();
    assert_eq!(store.get_log("c1").await.unwrap(), b"old one new!");
    assert_eq!(store.get_log("c2").await.unwrap(), [0]);
    assert_eq!(store.get_call("f1", "c1").await.unwrap(), c1);
    store.remove_fn("f1").await.unwrap();
    assert!(store.get_log("c1").await.is_err());
    assert!(store.get_log("c2").await.is_err());
    store.close().await;
}
