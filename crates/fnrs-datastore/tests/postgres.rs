//! The SQL store on a real PostgreSQL: `FNRS_TEST_PG_URL`'s server (a fresh
//! database per test) or a private cluster started for the test. These tests
//! fail, never skip, when no PostgreSQL can be had.

use std::sync::Arc;
use std::time::Duration;

use fnrs_datastore::conformance::{self, app, func};
use fnrs_datastore::{Backend, CachedStore, Datastore, SqlOptions, SqlStore, StoreError};
use fnrs_testkit::pg::TempPostgres;
use sqlx::Connection;

async fn temp_pg() -> TempPostgres {
    tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
        .expect("a PostgreSQL server is needed for these tests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    let pg = temp_pg().await;
    let store = SqlStore::connect(&pg.url, &SqlOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    conformance::run_all(Arc::new(store.clone())).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_postgres_store_conforms() {
    let pg = temp_pg().await;
    let store = SqlStore::connect(&pg.url, &SqlOptions::default())
        .await
        .unwrap();
    conformance::run_all(Arc::new(CachedStore::new(store.clone()))).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_schema_is_migrated_once_and_data_kept() {
    let pg = temp_pg().await;
    let url = pg.url.replacen("postgres://", "postgresql://", 1);
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
    let store = SqlStore::connect(&pg.url, &SqlOptions::default())
        .await
        .unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap(), a);
    assert_eq!(store.get_fn(&f.id).await.unwrap(), f);
    // A detached call accepted before the restart is still there to run.
    assert_eq!(store.list_pending().await.unwrap(), [pending]);
    assert_eq!(store.get_call(&f.id, &queued.id).await.unwrap(), queued);
    assert_eq!(store.get_log(&queued.id).await.unwrap(), b"log");
    store.close().await;

    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&pg.url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY table_name",
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
    conn.close().await.unwrap();
}

#[tokio::test]
async fn unreachable_postgres_gives_up_with_a_clear_message() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://fn:sekrit@127.0.0.1:{port}/fn?sslmode=disable");
    let opts = SqlOptions {
        ping_max_retries: 2,
        ping_interval: Duration::from_millis(50),
        ..SqlOptions::default()
    };
    let err = SqlStore::connect(&url, &opts).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unreachable { attempts: 3, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("postgres://fn:***@127.0.0.1:{port}/fn")),
        "{msg}"
    );
    assert!(msg.contains("not reachable after 3 attempts"), "{msg}");
    assert!(!msg.contains("sekrit"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_comes_up_late_is_waited_for() {
    let pg = temp_pg().await;
    let real = {
        let u = url::Url::parse(&pg.url).unwrap();
        format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
    };
    // A port that refuses connections until a forwarder to the real server
    // starts listening on it, a little after the store began trying.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let late_url = {
        let mut u = url::Url::parse(&pg.url).unwrap();
        u.set_port(Some(port)).unwrap();
        u.to_string()
    };
    let forwarder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let real = real.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(real).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let opts = SqlOptions {
        ping_max_retries: 100,
        ping_interval: Duration::from_millis(50),
        ..SqlOptions::default()
    };
    let store = SqlStore::connect(&late_url, &opts).await.unwrap();
    let a = app("late");
    store.insert_app(&a).await.unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap(), a);
    store.close().await;
    forwarder.abort();
}
