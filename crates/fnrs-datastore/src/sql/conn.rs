//! Opening a [`SqlStore`]: pools and their settings per backend, the wait
//! for PostgreSQL, migrations; transactions.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Connection, Transaction};

use super::dialect::internal;
use super::{Backend, SqlOptions, SqlStore};
use crate::prio::WriterPriority;
use crate::url::DbUrl;
use crate::{Result, StoreError};

impl SqlStore {
    /// Opens (creating if needed) the database named by Fn's `FN_DB_URL` and
    /// applies pending migrations. PostgreSQL that cannot be reached is tried
    /// again `opts.ping_max_retries` times, `opts.ping_interval` apart.
    pub async fn connect(url: &str, opts: &SqlOptions) -> std::result::Result<Self, StoreError> {
        let db = DbUrl::parse(url)?;
        Self::connect_to(&db, opts).await
    }

    /// [`SqlStore::connect`] with the URL already parsed.
    pub async fn connect_to(
        db: &DbUrl,
        opts: &SqlOptions,
    ) -> std::result::Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = db.redacted();
        let open = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        let store = match db {
            DbUrl::Sqlite(path) => {
                create_parent_dir(path)?;
                let url = sqlite_url(path);
                let busy_ms = opts.busy_timeout.as_millis().min(i64::MAX as u128) as i64;
                let pool = |max: u32, sync: &'static str| {
                    AnyPoolOptions::new()
                        .max_connections(max)
                        .after_connect(move |conn, _| {
                            Box::pin(async move {
                                // Per connection (sqlx turns foreign keys on too; say it here anyway).
                                sqlx::query(sqlx::AssertSqlSafe(format!(
                                    "PRAGMA busy_timeout = {busy_ms}"
                                )))
                                .execute(&mut *conn)
                                .await?;
                                sqlx::query(sqlx::AssertSqlSafe(format!(
                                    "PRAGMA synchronous = {sync}"
                                )))
                                .execute(&mut *conn)
                                .await?;
                                sqlx::query("PRAGMA foreign_keys = ON")
                                    .execute(&mut *conn)
                                    .await?;
                                Ok(())
                            })
                        })
                };
                let write = pool(1, "FULL").connect(&url).await.map_err(open)?;
                // WAL is a property of the file: set once, by the writer.
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                    .fetch_one(&write)
                    .await
                    .map_err(open)?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(%mode, url = %shown, "sqlite refused WAL journal mode");
                }
                let read = pool(opts.max_connections.max(1), "FULL")
                    .connect(&url)
                    .await
                    .map_err(open)?;
                // The record writer keeps its one connection (and so its
                // thread, whose priority follows the recorder) for ever.
                let before = crate::prio::worker_threads();
                // No ping before each batch: the connection is a thread of this
                // process, and the round trip cost more than the batch's own
                // work at moderate call rates (`benches/records.rs`).
                let records = pool(1, "NORMAL")
                    .test_before_acquire(false)
                    .max_lifetime(None)
                    .idle_timeout(None)
                    .connect(&url)
                    .await
                    .map_err(open)?;
                let records_prio = Arc::new(WriterPriority::find(&before));
                Self {
                    read,
                    write,
                    records,
                    records_prio,
                    backend: Backend::Sqlite,
                }
            }
            DbUrl::Postgres(url) => {
                wait_for_postgres(url, &shown, opts).await?;
                let pool = AnyPoolOptions::new()
                    .max_connections(opts.max_connections.max(1))
                    .acquire_timeout(opts.connect_timeout.max(Duration::from_secs(1)) * 3)
                    .connect(url)
                    .await
                    .map_err(open)?;
                Self {
                    read: pool.clone(),
                    records: pool.clone(),
                    write: pool,
                    // The writer is the database server.
                    records_prio: Arc::new(WriterPriority::off()),
                    backend: Backend::Postgres,
                }
            }
        };
        super::schema::migrator(store.backend)
            .run(&store.write)
            .await
            .map_err(|source| StoreError::Migrate { url: shown, source })?;
        Ok(store)
    }

    /// The OS thread (Linux thread id) that writes call records and logs,
    /// when its CPU priority follows [`Datastore::records_behind`]: SQLite,
    /// a process allowed to raise a thread's priority back
    /// (`CAP_SYS_NICE`), and the thread identified at connect. `None`: the
    /// writer keeps its normal priority.
    pub fn records_writer_thread(&self) -> Option<i32> {
        self.records_prio.tid()
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (waits for those in use to come back).
    pub async fn close(&self) {
        self.read.close().await;
        self.records.close().await;
        self.write.close().await;
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so that it never fails half-way on a lock upgrade.
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.write.begin().await,
        };
        tx.map_err(internal("begin"))
    }
}

fn create_parent_dir(path: &Path) -> std::result::Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o750);
    b.create(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// sqlx's URL for a SQLite file (created if missing).
fn sqlite_url(path: &Path) -> String {
    const ESCAPE: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
    let p = path.to_string_lossy();
    format!(
        "sqlite://{}?mode=rwc",
        percent_encoding::utf8_percent_encode(&p, ESCAPE)
    )
}

async fn wait_for_postgres(
    url: &str,
    shown: &str,
    opts: &SqlOptions,
) -> std::result::Result<(), StoreError> {
    let attempts = opts.ping_max_retries.saturating_add(1);
    let mut n = 0;
    loop {
        n += 1;
        let attempt = tokio::time::timeout(opts.connect_timeout, sqlx::AnyConnection::connect(url))
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", opts.connect_timeout),
                )))
            });
        match attempt {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Err(source) if n >= attempts => {
                return Err(StoreError::Unreachable {
                    url: shown.to_string(),
                    attempts,
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(url = %shown, attempt = n, of = attempts, error = %e, "database not reachable yet");
                tokio::time::sleep(opts.ping_interval).await;
            }
        }
    }
}
