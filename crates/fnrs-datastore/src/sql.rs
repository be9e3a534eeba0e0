//! [`SqlStore`]: the store on SQLite or PostgreSQL through sqlx's `Any`
//! driver, with one set of queries (`$N` placeholders) for both.
//!
//! Schema per backend in `migrations/{sqlite,postgres}`, embedded and applied
//! at connect. Everything is TEXT (timestamps as RFC 3339 millis, maps as JSON)
//! but sizes and counters, so both backends store and order identically.
//!
//! SQLite: one writer connection (writes never contend with each other) and a
//! small pool of readers, WAL journal, `synchronous=FULL` (a write is on disk
//! when the call returns), foreign keys on, busy timeout; call records and
//! logs on a third connection whose thread runs at nice 19 while the recorder
//! keeps up (see `prio`). PostgreSQL: one pool.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fnrs_model::{
    App, AppFilter, Call, CallFilter, CallStatus, CallType, DateTime, Error, Fn, FnFilter,
    PendingCall, Trigger, TriggerFilter,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

use crate::prio::WriterPriority;
use crate::url::DbUrl;
use crate::{Datastore, PendingSummary, Result, StoreError, TRIGGER_FN_NOT_IN_APP};

/// Settings of a [`SqlStore`].
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// PostgreSQL: connections in the pool. SQLite: reader connections (plus
    /// one writer).
    pub max_connections: u32,
    /// PostgreSQL: how many more times to try reaching the server when the
    /// first attempt fails (Fn's `FN_DS_DB_PING_MAX_RETRIES`, default 10).
    pub ping_max_retries: u32,
    /// Pause between those attempts (default 1 s).
    pub ping_interval: Duration,
    /// PostgreSQL: how long one attempt may take (default 10 s).
    pub connect_timeout: Duration,
    /// SQLite: how long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            ping_max_retries: 10,
            ping_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Which SQL engine is behind the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The [`Datastore`] on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    read: AnyPool,
    write: AnyPool,
    /// Where call records and logs are written. On SQLite its own connection
    /// with `synchronous = NORMAL`: a record is not acknowledged to anyone,
    /// so it skips the fsync per commit (it still survives a crash of the
    /// process; a power loss may take the last ones).
    records: AnyPool,
    /// The CPU priority of the `records` connection's thread (SQLite only).
    records_prio: Arc<WriterPriority>,
    backend: Backend,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "call log inline",
        include_str!("../migrations/sqlite/0002_call_log_inline.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "call log inline",
        include_str!("../migrations/postgres/0002_call_log_inline.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, desc, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(desc),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}

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
        migrator(store.backend)
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
    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
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

// ---------------------------------------------------------------- errors

/// Logs an unexpected database error and hides it behind a 500.
fn internal(op: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        tracing::error!(op, error = %e, "datastore query failed");
        Error::INTERNAL
    }
}

fn is_unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_foreign_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Maps a uniqueness violation to `conflict`, anything else to a 500.
fn unique_or(op: &'static str, conflict: Error) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| {
        if is_unique(&e) {
            conflict
        } else {
            internal(op)(e)
        }
    }
}

fn corrupt(op: &'static str, what: &str) -> Error {
    tracing::error!(op, what, "datastore row does not decode");
    Error::INTERNAL
}

// ---------------------------------------------------------------- encoding

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

fn from_json<T: serde::de::DeserializeOwned + Default>(s: &str, op: &'static str) -> Result<T> {
    if s.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(s).map_err(|_| corrupt(op, "json"))
}

fn time(row: &AnyRow, col: &str, op: &'static str) -> Result<DateTime> {
    let s: String = row.try_get(col).map_err(internal(op))?;
    s.parse().map_err(|_| corrupt(op, col))
}

fn opt_time(row: &AnyRow, col: &str, op: &'static str) -> Result<Option<DateTime>> {
    let s: Option<String> = row.try_get(col).map_err(internal(op))?;
    s.map(|s| s.parse().map_err(|_| corrupt(op, col)))
        .transpose()
}

fn text(row: &AnyRow, col: &str, op: &'static str) -> Result<String> {
    row.try_get(col).map_err(internal(op))
}

fn opt_text(row: &AnyRow, col: &str, op: &'static str) -> Result<Option<String>> {
    row.try_get(col).map_err(internal(op))
}

fn int(row: &AnyRow, col: &str, op: &'static str) -> Result<i64> {
    row.try_get(col).map_err(internal(op))
}

fn limit(per_page: u32) -> i64 {
    if per_page == 0 {
        i64::MAX
    } else {
        per_page as i64
    }
}

macro_rules! app_cols {
    () => {
        "id, name, config, annotations, syslog_url, shape, created_at, updated_at"
    };
}
macro_rules! fn_cols {
    () => {
        "id, app_id, name, image, format, memory, timeout, idle_timeout, config, annotations, \
         shape, created_at, updated_at"
    };
}
macro_rules! trigger_cols {
    () => {
        "id, app_id, fn_id, name, type, source, annotations, created_at, updated_at"
    };
}
macro_rules! call_cols {
    () => {
        "id, fn_id, app_id, trigger_id, status, type, method, url, created_at, started_at, \
         completed_at, http_status, error, stats"
    };
}

fn app_row(row: &AnyRow) -> Result<App> {
    const OP: &str = "decode app";
    Ok(App {
        id: text(row, "id", OP)?,
        name: text(row, "name", OP)?,
        config: from_json(&text(row, "config", OP)?, OP)?,
        annotations: from_json(&text(row, "annotations", OP)?, OP)?,
        syslog_url: opt_text(row, "syslog_url", OP)?,
        shape: text(row, "shape", OP)?,
        created_at: time(row, "created_at", OP)?,
        updated_at: time(row, "updated_at", OP)?,
    })
}

fn fn_row(row: &AnyRow) -> Result<Fn> {
    const OP: &str = "decode fn";
    Ok(Fn {
        id: text(row, "id", OP)?,
        app_id: text(row, "app_id", OP)?,
        name: text(row, "name", OP)?,
        image: text(row, "image", OP)?,
        format: opt_text(row, "format", OP)?,
        memory: u64::try_from(int(row, "memory", OP)?).map_err(|_| corrupt(OP, "memory"))?,
        timeout: i32::try_from(int(row, "timeout", OP)?).map_err(|_| corrupt(OP, "timeout"))?,
        idle_timeout: i32::try_from(int(row, "idle_timeout", OP)?)
            .map_err(|_| corrupt(OP, "idle_timeout"))?,
        config: from_json(&text(row, "config", OP)?, OP)?,
        annotations: from_json(&text(row, "annotations", OP)?, OP)?,
        shape: text(row, "shape", OP)?,
        created_at: time(row, "created_at", OP)?,
        updated_at: time(row, "updated_at", OP)?,
    })
}

fn trigger_row(row: &AnyRow) -> Result<Trigger> {
    const OP: &str = "decode trigger";
    Ok(Trigger {
        id: text(row, "id", OP)?,
        app_id: text(row, "app_id", OP)?,
        fn_id: text(row, "fn_id", OP)?,
        name: text(row, "name", OP)?,
        kind: text(row, "type", OP)?,
        source: text(row, "source", OP)?,
        annotations: from_json(&text(row, "annotations", OP)?, OP)?,
        created_at: time(row, "created_at", OP)?,
        updated_at: time(row, "updated_at", OP)?,
    })
}

fn call_row(row: &AnyRow) -> Result<Call> {
    const OP: &str = "decode call";
    let status = text(row, "status", OP)?;
    let kind = text(row, "type", OP)?;
    Ok(Call {
        id: text(row, "id", OP)?,
        fn_id: text(row, "fn_id", OP)?,
        app_id: text(row, "app_id", OP)?,
        trigger_id: opt_text(row, "trigger_id", OP)?,
        status: CallStatus::parse(&status).ok_or_else(|| corrupt(OP, "status"))?,
        kind: match kind.as_str() {
            "sync" => CallType::Sync,
            "detached" => CallType::Detached,
            _ => return Err(corrupt(OP, "type")),
        },
        method: text(row, "method", OP)?,
        url: text(row, "url", OP)?,
        created_at: time(row, "created_at", OP)?,
        started_at: opt_time(row, "started_at", OP)?,
        completed_at: opt_time(row, "completed_at", OP)?,
        http_status: row
            .try_get::<Option<i64>, _>("http_status")
            .map_err(internal(OP))?
            .map(|s| u16::try_from(s).map_err(|_| corrupt(OP, "http_status")))
            .transpose()?,
        error: opt_text(row, "error", OP)?,
        stats: from_json(&text(row, "stats", OP)?, OP)?,
    })
}

fn pending_row(row: &AnyRow) -> Result<PendingCall> {
    const OP: &str = "decode pending call";
    Ok(PendingCall {
        call_id: text(row, "call_id", OP)?,
        fn_id: text(row, "fn_id", OP)?,
        trigger_id: opt_text(row, "trigger_id", OP)?,
        method: text(row, "method", OP)?,
        url: text(row, "url", OP)?,
        headers: from_json(&text(row, "headers", OP)?, OP)?,
        body: row.try_get("body").map_err(internal(OP))?,
        attempts: u32::try_from(int(row, "attempts", OP)?).map_err(|_| corrupt(OP, "attempts"))?,
    })
}

fn call_kind(k: CallType) -> &'static str {
    match k {
        CallType::Sync => "sync",
        CallType::Detached => "detached",
    }
}

/// What an insert of a call record does when the record exists.
const UPSERT_CALL_TAIL: &str = " ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
     type = excluded.type, method = excluded.method, url = excluded.url, \
     trigger_id = excluded.trigger_id, created_at = excluded.created_at, \
     started_at = excluded.started_at, completed_at = excluded.completed_at, \
     http_status = excluded.http_status, error = excluded.error, stats = excluded.stats, \
     log = COALESCE(excluded.log, calls.log)";

/// Most rows written by one multi-row `INSERT` (15 parameters each for
/// calls: well under SQLite's and Postgres's limits).
const ROWS_PER_INSERT: usize = 64;

/// How a batch of `n` rows is cut into multi-row statements: as many of
/// [`ROWS_PER_INSERT`] as fit, then the rest by powers of two (61 → 32, 16,
/// 8, 4, 1). Only 7 sizes, so each statement kind has at most 7 texts and
/// they all stay in the connection's prepared statement cache (sqlx keeps
/// 100 per connection; one text per batch size, 1 to 64, thrashed it).
fn statement_sizes(n: usize) -> impl Iterator<Item = usize> {
    let full = n / ROWS_PER_INSERT;
    let rest = n % ROWS_PER_INSERT;
    std::iter::repeat_n(ROWS_PER_INSERT, full).chain(
        (0..usize::BITS)
            .rev()
            .map(|b| 1usize << b)
            .filter(move |&p| rest & p != 0),
    )
}

/// A log chunk to append: `(call_id, fn_id, bytes)`.
type Chunk<'a> = (&'a str, &'a str, Cow<'a, [u8]>);

/// The log to keep in each call's row (aligned with the batch's calls).
type OwnLogs<'a> = Vec<Option<Cow<'a, [u8]>>>;

/// Sorts a batch's logs: those of the batch's `calls` (same call id and fn
/// id) joined per call, in the order given, aligned with `calls`; and the
/// others (logs of calls recorded earlier or not yet) as chunks to append.
fn split_logs<'a>(
    calls: &[&'a Call],
    logs: &[&'a (String, String, Vec<u8>)],
) -> (OwnLogs<'a>, Vec<Chunk<'a>>) {
    let mut own: OwnLogs<'a> = vec![None; calls.len()];
    let mut rest = Vec::new();
    if logs.is_empty() {
        return (own, rest);
    }
    let index: std::collections::HashMap<&str, usize> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    // A call with a chunk under another fn id keeps all its chunks apart, so
    // that they stay in order.
    let mixed: std::collections::HashSet<&str> = logs
        .iter()
        .filter(|(id, fn_id, _)| {
            index
                .get(id.as_str())
                .is_some_and(|&i| calls[i].fn_id != *fn_id)
        })
        .map(|(id, _, _)| id.as_str())
        .collect();
    for (id, fn_id, data) in logs.iter().copied() {
        match index.get(id.as_str()) {
            Some(&i) if !mixed.contains(id.as_str()) => match &mut own[i] {
                Some(joined) => joined.to_mut().extend_from_slice(data),
                slot => *slot = Some(Cow::Borrowed(data)),
            },
            _ => rest.push((id.as_str(), fn_id.as_str(), Cow::Borrowed(&data[..]))),
        }
    }
    (own, rest)
}

/// Moves to `rest` the logs in `own` of calls that already have some log
/// stored (in their row or in `call_logs`): a log kept in the call row must
/// come before every appended chunk, so only a call's first log goes there.
async fn divert_stored_logs<'a>(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    calls: &[&'a Call],
    own: &mut [Option<Cow<'a, [u8]>>],
    rest: &mut Vec<Chunk<'a>>,
) -> Result<()> {
    use std::fmt::Write;
    let with_log: Vec<usize> = (0..calls.len()).filter(|&i| own[i].is_some()).collect();
    let mut at = 0;
    for n in statement_sizes(with_log.len()) {
        let part = &with_log[at..at + n];
        at += n;
        let mut sql = String::with_capacity(240 + n * 8);
        sql.push_str("SELECT v.column1 FROM (VALUES ");
        for r in 0..n {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", r + 1);
                }
            }
            sql.push(')');
        }
        sql.push_str(
            ") AS v WHERE EXISTS (SELECT 1 FROM call_logs WHERE call_logs.call_id = v.column1) \
             OR EXISTS (SELECT 1 FROM calls WHERE calls.id = v.column1 AND calls.log IS NOT NULL)",
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for &i in part {
            q = q.bind(&calls[i].id);
        }
        let stored = q
            .fetch_all(&mut *conn)
            .await
            .map_err(internal("put logs"))?;
        for id in stored {
            if let Some(&i) = part.iter().find(|&&i| calls[i].id == id)
                && let Some(data) = own[i].take()
            {
                rest.push((calls[i].id.as_str(), calls[i].fn_id.as_str(), data));
            }
        }
    }
    Ok(())
}

/// `head FROM (VALUES ($1, …, 0), …) AS v WHERE <the fn exists> tail`:
/// `rows` rows of `cols` parameters, numbered in order, and then the row's
/// index (column `cols + 1`, to keep the order with `ORDER BY`); the fn's id
/// is each row's second column. Rows of fns deleted meanwhile are skipped.
///
/// SQLite gets anonymous `?` parameters: sqlx looks every parameter up by
/// name, and SQLite's lookup of numbered names is linear in their number.
fn multi_row_insert(backend: Backend, head: &str, cols: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + tail.len() + 96 + rows * cols * 6);
    sql.push_str(head);
    sql.push_str(" FROM (VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            sql.push_str(if c == 0 { "" } else { ", " });
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    let _ = write!(sql, "${}", r * cols + c + 1);
                }
            }
        }
        let _ = write!(sql, ", {r})");
    }
    sql.push_str(") AS v WHERE EXISTS (SELECT 1 FROM fns WHERE fns.id = v.column2)");
    sql.push_str(tail);
    sql
}

/// Inserts or replaces call records in one statement, skipping those whose
/// fn is gone. Returns how many rows were written.
async fn insert_calls(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    calls: &[&Call],
    logs: &[Option<Cow<'_, [u8]>>],
) -> Result<u64> {
    let sql = multi_row_insert(
        backend,
        concat!(
            "INSERT INTO calls (",
            call_cols!(),
            ", log) SELECT column1, column2, column3, column4, column5, column6, column7, \
             column8, column9, column10, column11, column12, column13, column14, column15"
        ),
        15,
        calls.len(),
        UPSERT_CALL_TAIL,
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (c, log) in calls.iter().zip(logs) {
        q = q
            .bind(&c.id)
            .bind(&c.fn_id)
            .bind(&c.app_id)
            .bind(&c.trigger_id)
            .bind(c.status.as_str())
            .bind(call_kind(c.kind))
            .bind(&c.method)
            .bind(&c.url)
            .bind(c.created_at.to_string())
            .bind(c.started_at.map(|t| t.to_string()))
            .bind(c.completed_at.map(|t| t.to_string()))
            .bind(c.http_status.map(i64::from))
            .bind(&c.error)
            .bind(to_json(&c.stats))
            .bind(log.as_deref());
    }
    let done = q.execute(conn).await.map_err(internal("put calls"))?;
    Ok(done.rows_affected())
}

/// Fn's checks of a trigger against its app, its fn and the other triggers'
/// sources, inside the writing transaction.
async fn check_trigger(
    conn: &mut sqlx::AnyConnection,
    app_id: &str,
    t: &Trigger,
    except_id: &str,
) -> Result<()> {
    const OP: &str = "check trigger";
    let app = sqlx::query("SELECT 1 FROM apps WHERE id = $1")
        .bind(app_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(internal(OP))?;
    if app.is_none() {
        return Err(Error::APP_NOT_FOUND);
    }
    let owner: Option<String> = sqlx::query_scalar("SELECT app_id FROM fns WHERE id = $1")
        .bind(&t.fn_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(internal(OP))?;
    match owner {
        None => return Err(Error::FN_NOT_FOUND),
        Some(o) if o != app_id => return Err(TRIGGER_FN_NOT_IN_APP),
        Some(_) => {}
    }
    let taken = sqlx::query(
        "SELECT 1 FROM triggers WHERE app_id = $1 AND type = $2 AND source = $3 AND id <> $4",
    )
    .bind(app_id)
    .bind(&t.kind)
    .bind(&t.source)
    .bind(except_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(internal(OP))?;
    if taken.is_some() {
        return Err(Error::TRIGGER_SOURCE_EXISTS);
    }
    Ok(())
}

impl SqlStore {
    /// Which of a trigger's uniqueness rules a failed write broke (after the
    /// transaction is gone: a concurrent writer won the race).
    async fn trigger_conflict(&self, app_id: &str, t: &Trigger) -> Error {
        let taken = sqlx::query(
            "SELECT 1 FROM triggers WHERE app_id = $1 AND type = $2 AND source = $3 AND id <> $4",
        )
        .bind(app_id)
        .bind(&t.kind)
        .bind(&t.source)
        .bind(&t.id)
        .fetch_optional(&self.read)
        .await;
        match taken {
            Ok(Some(_)) => Error::TRIGGER_SOURCE_EXISTS,
            Ok(None) => Error::TRIGGER_EXISTS,
            Err(e) => internal("trigger conflict")(e),
        }
    }

    /// Runs a trigger insert or update: checks, then `write`, in one
    /// transaction; uniqueness races are reported as Fn would.
    async fn write_trigger(&self, t: &Trigger, insert: bool) -> Result<()> {
        let op = if insert {
            "insert trigger"
        } else {
            "update trigger"
        };
        let mut tx = self.begin_write().await?;
        let app_id = if insert {
            t.app_id.clone()
        } else {
            sqlx::query_scalar::<_, String>("SELECT app_id FROM triggers WHERE id = $1")
                .bind(&t.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(internal(op))?
                .ok_or(Error::TRIGGER_NOT_FOUND)?
        };
        check_trigger(&mut tx, &app_id, t, &t.id).await?;
        let res = if insert {
            sqlx::query(concat!(
                "INSERT INTO triggers (",
                trigger_cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&t.id)
            .bind(&app_id)
            .bind(&t.fn_id)
            .bind(&t.name)
            .bind(&t.kind)
            .bind(&t.source)
            .bind(to_json(&t.annotations))
            .bind(t.created_at.to_string())
            .bind(t.updated_at.to_string())
            .execute(&mut *tx)
            .await
        } else {
            sqlx::query(
                "UPDATE triggers SET fn_id = $2, name = $3, type = $4, source = $5, \
                 annotations = $6, updated_at = $7 WHERE id = $1",
            )
            .bind(&t.id)
            .bind(&t.fn_id)
            .bind(&t.name)
            .bind(&t.kind)
            .bind(&t.source)
            .bind(to_json(&t.annotations))
            .bind(t.updated_at.to_string())
            .execute(&mut *tx)
            .await
        };
        match res {
            Ok(done) if done.rows_affected() == 0 => Err(Error::TRIGGER_NOT_FOUND),
            Ok(_) => tx.commit().await.map_err(internal(op)),
            Err(e) if is_unique(&e) => {
                drop(tx);
                Err(self.trigger_conflict(&app_id, t).await)
            }
            Err(e) if is_foreign_key(&e) => Err(Error::FN_NOT_FOUND),
            Err(e) => Err(internal(op)(e)),
        }
    }
}

#[async_trait]
impl Datastore for SqlStore {
    async fn insert_app(&self, app: &App) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO apps (",
            app_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&app.id)
        .bind(&app.name)
        .bind(to_json(&app.config))
        .bind(to_json(&app.annotations))
        .bind(&app.syslog_url)
        .bind(&app.shape)
        .bind(app.created_at.to_string())
        .bind(app.updated_at.to_string())
        .execute(&self.write)
        .await
        .map_err(unique_or("insert app", Error::APP_ALREADY_EXISTS))?;
        Ok(())
    }

    async fn update_app(&self, app: &App) -> Result<()> {
        let done = sqlx::query(
            "UPDATE apps SET name = $2, config = $3, annotations = $4, syslog_url = $5, \
             shape = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(&app.id)
        .bind(&app.name)
        .bind(to_json(&app.config))
        .bind(to_json(&app.annotations))
        .bind(&app.syslog_url)
        .bind(&app.shape)
        .bind(app.updated_at.to_string())
        .execute(&self.write)
        .await
        .map_err(unique_or("update app", Error::APP_ALREADY_EXISTS))?;
        if done.rows_affected() == 0 {
            return Err(Error::APP_NOT_FOUND);
        }
        Ok(())
    }

    async fn get_app(&self, app_id: &str) -> Result<App> {
        let row = sqlx::query(concat!("SELECT ", app_cols!(), " FROM apps WHERE id = $1"))
            .bind(app_id)
            .fetch_optional(&self.read)
            .await
            .map_err(internal("get app"))?;
        app_row(&row.ok_or(Error::APP_NOT_FOUND)?)
    }

    async fn get_app_by_name(&self, name: &str) -> Result<App> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_cols!(),
            " FROM apps WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.read)
        .await
        .map_err(internal("get app by name"))?;
        app_row(&row.ok_or(Error::APP_NOT_FOUND)?)
    }

    async fn remove_app(&self, app_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(app_id)
            .execute(&self.write)
            .await
            .map_err(internal("remove app"))?;
        if done.rows_affected() == 0 {
            return Err(Error::APP_NOT_FOUND);
        }
        Ok(())
    }

    async fn list_apps(&self, filter: &AppFilter) -> Result<Vec<App>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_cols!(),
            " FROM apps WHERE ($1 IS NULL OR name = $1) AND ($2 IS NULL OR name > $2) \
             ORDER BY name LIMIT $3"
        ))
        .bind(&filter.name)
        .bind(&filter.cursor)
        .bind(limit(filter.per_page))
        .fetch_all(&self.read)
        .await
        .map_err(internal("list apps"))?;
        rows.iter().map(app_row).collect()
    }

    async fn insert_fn(&self, f: &Fn) -> Result<()> {
        let done = sqlx::query(concat!(
            "INSERT INTO fns (",
            fn_cols!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
             WHERE EXISTS (SELECT 1 FROM apps WHERE id = $2)"
        ))
        .bind(&f.id)
        .bind(&f.app_id)
        .bind(&f.name)
        .bind(&f.image)
        .bind(&f.format)
        .bind(i64::try_from(f.memory).unwrap_or(i64::MAX))
        .bind(i64::from(f.timeout))
        .bind(i64::from(f.idle_timeout))
        .bind(to_json(&f.config))
        .bind(to_json(&f.annotations))
        .bind(&f.shape)
        .bind(f.created_at.to_string())
        .bind(f.updated_at.to_string())
        .execute(&self.write)
        .await
        .map_err(|e| {
            if is_foreign_key(&e) {
                Error::APP_NOT_FOUND
            } else {
                unique_or("insert fn", Error::FN_ALREADY_EXISTS)(e)
            }
        })?;
        if done.rows_affected() == 0 {
            return Err(Error::APP_NOT_FOUND);
        }
        Ok(())
    }

    async fn update_fn(&self, f: &Fn) -> Result<()> {
        let done = sqlx::query(
            "UPDATE fns SET name = $2, image = $3, format = $4, memory = $5, timeout = $6, \
             idle_timeout = $7, config = $8, annotations = $9, shape = $10, updated_at = $11 \
             WHERE id = $1",
        )
        .bind(&f.id)
        .bind(&f.name)
        .bind(&f.image)
        .bind(&f.format)
        .bind(i64::try_from(f.memory).unwrap_or(i64::MAX))
        .bind(i64::from(f.timeout))
        .bind(i64::from(f.idle_timeout))
        .bind(to_json(&f.config))
        .bind(to_json(&f.annotations))
        .bind(&f.shape)
        .bind(f.updated_at.to_string())
        .execute(&self.write)
        .await
        .map_err(unique_or("update fn", Error::FN_ALREADY_EXISTS))?;
        if done.rows_affected() == 0 {
            return Err(Error::FN_NOT_FOUND);
        }
        Ok(())
    }

    async fn get_fn(&self, fn_id: &str) -> Result<Fn> {
        let row = sqlx::query(concat!("SELECT ", fn_cols!(), " FROM fns WHERE id = $1"))
            .bind(fn_id)
            .fetch_optional(&self.read)
            .await
            .map_err(internal("get fn"))?;
        fn_row(&row.ok_or(Error::FN_NOT_FOUND)?)
    }

    async fn remove_fn(&self, fn_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM fns WHERE id = $1")
            .bind(fn_id)
            .execute(&self.write)
            .await
            .map_err(internal("remove fn"))?;
        if done.rows_affected() == 0 {
            return Err(Error::FN_NOT_FOUND);
        }
        Ok(())
    }

    async fn list_fns(&self, filter: &FnFilter) -> Result<Vec<Fn>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            fn_cols!(),
            " FROM fns WHERE app_id = $1 AND ($2 IS NULL OR name = $2) \
             AND ($3 IS NULL OR name > $3) ORDER BY name LIMIT $4"
        ))
        .bind(&filter.app_id)
        .bind(&filter.name)
        .bind(&filter.cursor)
        .bind(limit(filter.per_page))
        .fetch_all(&self.read)
        .await
        .map_err(internal("list fns"))?;
        rows.iter().map(fn_row).collect()
    }

    async fn insert_trigger(&self, t: &Trigger) -> Result<()> {
        self.write_trigger(t, true).await
    }

    async fn update_trigger(&self, t: &Trigger) -> Result<()> {
        self.write_trigger(t, false).await
    }

    async fn get_trigger(&self, trigger_id: &str) -> Result<Trigger> {
        let row = sqlx::query(concat!(
            "SELECT ",
            trigger_cols!(),
            " FROM triggers WHERE id = $1"
        ))
        .bind(trigger_id)
        .fetch_optional(&self.read)
        .await
        .map_err(internal("get trigger"))?;
        trigger_row(&row.ok_or(Error::TRIGGER_NOT_FOUND)?)
    }

    async fn get_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Trigger> {
        let row = sqlx::query(concat!(
            "SELECT ",
            trigger_cols!(),
            " FROM triggers WHERE app_id = $1 AND type = $2 AND source = $3"
        ))
        .bind(app_id)
        .bind(kind)
        .bind(source)
        .fetch_optional(&self.read)
        .await
        .map_err(internal("get trigger by source"))?;
        trigger_row(&row.ok_or(Error::TRIGGER_NOT_FOUND)?)
    }

    async fn remove_trigger(&self, trigger_id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM triggers WHERE id = $1")
            .bind(trigger_id)
            .execute(&self.write)
            .await
            .map_err(internal("remove trigger"))?;
        if done.rows_affected() == 0 {
            return Err(Error::TRIGGER_NOT_FOUND);
        }
        Ok(())
    }

    async fn list_triggers(&self, filter: &TriggerFilter) -> Result<Vec<Trigger>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            trigger_cols!(),
            " FROM triggers WHERE app_id = $1 AND ($2 IS NULL OR fn_id = $2) \
             AND ($3 IS NULL OR name = $3) AND ($4 IS NULL OR name > $4) \
             ORDER BY name, id LIMIT $5"
        ))
        .bind(&filter.app_id)
        .bind(&filter.fn_id)
        .bind(&filter.name)
        .bind(&filter.cursor)
        .bind(limit(filter.per_page))
        .fetch_all(&self.read)
        .await
        .map_err(internal("list triggers"))?;
        rows.iter().map(trigger_row).collect()
    }

    async fn put_calls(&self, calls: &[Call]) -> Result<()> {
        self.put_records(calls, &[]).await
    }

    async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        self.put_records(&[], logs).await
    }

    fn records_behind(&self, behind: bool) {
        self.records_prio.set_behind(behind);
    }

    async fn put_records(&self, calls: &[Call], logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        // An empty log is not stored: reading it answers an empty log when
        // the call exists (see `get_log`).
        let logs: Vec<&(String, String, Vec<u8>)> =
            logs.iter().filter(|(_, _, d)| !d.is_empty()).collect();
        if calls.is_empty() && logs.is_empty() {
            return Ok(());
        }
        // A record sent twice in one batch is written once, as last sent
        // (Postgres refuses to update one row twice in a statement).
        let mut last = std::collections::HashMap::with_capacity(calls.len());
        for (i, c) in calls.iter().enumerate() {
            last.insert(c.id.as_str(), i);
        }
        let calls: Vec<&Call> = calls
            .iter()
            .enumerate()
            .filter(|(i, c)| last.get(c.id.as_str()) == Some(i))
            .map(|(_, c)| c)
            .collect();
        // The log of a call recorded in this batch goes into its call row
        // (its chunks joined in order), unless the call already has some log
        // stored (see `split_logs`); the others are appended to `call_logs`.
        let (mut own, mut rest) = split_logs(&calls, &logs);
        let mut tx = match self.backend {
            Backend::Sqlite => self.records.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.records.begin().await,
        }
        .map_err(internal("begin"))?;
        if self.backend == Backend::Postgres {
            // As on SQLite: no wait for the WAL flush (a crash of fnrs loses
            // nothing; one of PostgreSQL's host may lose the last records).
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(internal("put records"))?;
        }
        divert_stored_logs(self.backend, &mut tx, &calls, &mut own, &mut rest).await?;
        let mut at = 0;
        for n in statement_sizes(calls.len()) {
            insert_calls(self.backend, &mut tx, &calls[at..at + n], &own[at..at + n]).await?;
            at += n;
        }
        let mut at = 0;
        for n in statement_sizes(rest.len()) {
            let sql = multi_row_insert(
                self.backend,
                "INSERT INTO call_logs (call_id, fn_id, data) SELECT column1, column2, column3",
                3,
                n,
                // Chunks of a log are appended in the order given.
                " ORDER BY column4",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (call_id, fn_id, data) in &rest[at..at + n] {
                q = q.bind(*call_id).bind(*fn_id).bind(&**data);
            }
            q.execute(&mut *tx).await.map_err(internal("put logs"))?;
            at += n;
        }
        tx.commit().await.map_err(internal("put records"))
    }

    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call> {
        let row = sqlx::query(concat!(
            "SELECT ",
            call_cols!(),
            " FROM calls WHERE id = $1 AND fn_id = $2"
        ))
        .bind(call_id)
        .bind(fn_id)
        .fetch_optional(&self.read)
        .await
        .map_err(internal("get call"))?;
        call_row(&row.ok_or(Error::CALL_NOT_FOUND)?)
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            call_cols!(),
            " FROM calls WHERE fn_id = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(&filter.fn_id)
        .bind(&filter.cursor)
        .bind(limit(filter.per_page))
        .fetch_all(&self.read)
        .await
        .map_err(internal("list calls"))?;
        rows.iter().map(call_row).collect()
    }

    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>> {
        // The part kept in the call row first, then the appended chunks.
        let chunks: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM (SELECT log AS data, 0 AS part, 0 AS seq FROM calls \
             WHERE id = $1 AND log IS NOT NULL \
             UNION ALL SELECT data, 1 AS part, seq FROM call_logs WHERE call_id = $1) l \
             ORDER BY part, seq",
        )
        .bind(call_id)
        .fetch_all(&self.read)
        .await
        .map_err(internal("get log"))?;
        if chunks.is_empty() {
            return Err(Error::CALL_LOG_NOT_FOUND);
        }
        Ok(chunks.concat())
    }

    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64> {
        const OP: &str = "prune calls";
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM call_logs WHERE call_id IN (SELECT id FROM (SELECT id, \
             ROW_NUMBER() OVER (PARTITION BY fn_id ORDER BY id DESC) AS rn FROM calls) r \
             WHERE rn > $1) AND call_id NOT IN (SELECT call_id FROM pending_calls)",
        )
        .bind(i64::from(keep_per_fn))
        .execute(&mut *tx)
        .await
        .map_err(internal(OP))?;
        let done = sqlx::query(
            "DELETE FROM calls WHERE id IN (SELECT id FROM (SELECT id, \
             ROW_NUMBER() OVER (PARTITION BY fn_id ORDER BY id DESC) AS rn FROM calls) r \
             WHERE rn > $1) AND id NOT IN (SELECT call_id FROM pending_calls)",
        )
        .bind(i64::from(keep_per_fn))
        .execute(&mut *tx)
        .await
        .map_err(internal(OP))?;
        tx.commit().await.map_err(internal(OP))?;
        Ok(done.rows_affected())
    }

    async fn insert_pending(&self, call: &Call, p: &PendingCall) -> Result<()> {
        const OP: &str = "insert pending call";
        let mut tx = self.begin_write().await?;
        if insert_calls(self.backend, &mut tx, &[call], &[None]).await? == 0 {
            return Err(Error::FN_NOT_FOUND);
        }
        sqlx::query(
            "INSERT INTO pending_calls (call_id, fn_id, trigger_id, method, url, headers, body, \
             attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (call_id) DO UPDATE SET fn_id = excluded.fn_id, \
             trigger_id = excluded.trigger_id, method = excluded.method, url = excluded.url, \
             headers = excluded.headers, body = excluded.body, attempts = excluded.attempts",
        )
        .bind(&p.call_id)
        .bind(&p.fn_id)
        .bind(&p.trigger_id)
        .bind(&p.method)
        .bind(&p.url)
        .bind(to_json(&p.headers))
        .bind(&p.body)
        .bind(i64::from(p.attempts))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key(&e) {
                Error::FN_NOT_FOUND
            } else {
                internal(OP)(e)
            }
        })?;
        tx.commit().await.map_err(internal(OP))
    }

    async fn list_pending(&self) -> Result<Vec<PendingCall>> {
        let rows = sqlx::query(
            "SELECT call_id, fn_id, trigger_id, method, url, headers, body, attempts \
             FROM pending_calls ORDER BY call_id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(internal("list pending calls"))?;
        rows.iter().map(pending_row).collect()
    }

    async fn list_pending_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingSummary>> {
        const OP: &str = "list pending page";
        // The call record is written with the pending call and kept while
        // it waits; a LEFT JOIN still lists one that lacks it.
        let rows = sqlx::query(
            "SELECT p.call_id, p.fn_id, p.attempts, c.created_at FROM pending_calls p \
             LEFT JOIN calls c ON c.id = p.call_id \
             WHERE ($1 IS NULL OR p.call_id > $1) ORDER BY p.call_id LIMIT $2",
        )
        .bind(after)
        .bind(self::limit(limit))
        .fetch_all(&self.read)
        .await
        .map_err(internal(OP))?;
        rows.iter()
            .map(|row| {
                Ok(PendingSummary {
                    call_id: text(row, "call_id", OP)?,
                    fn_id: text(row, "fn_id", OP)?,
                    attempts: u32::try_from(int(row, "attempts", OP)?)
                        .map_err(|_| corrupt(OP, "attempts"))?,
                    created_at: opt_time(row, "created_at", OP)?
                        .unwrap_or(DateTime::from_millis(0)),
                })
            })
            .collect()
    }

    async fn get_pending(&self, call_id: &str) -> Result<PendingCall> {
        let row = sqlx::query(
            "SELECT call_id, fn_id, trigger_id, method, url, headers, body, attempts \
             FROM pending_calls WHERE call_id = $1",
        )
        .bind(call_id)
        .fetch_optional(&self.read)
        .await
        .map_err(internal("get pending call"))?;
        pending_row(&row.ok_or(Error::CALL_NOT_FOUND)?)
    }

    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()> {
        let done =
            sqlx::query("UPDATE pending_calls SET attempts = attempts + 1 WHERE call_id = $1")
                .bind(call_id)
                .execute(&self.write)
                .await
                .map_err(internal("bump pending call"))?;
        if done.rows_affected() == 0 {
            return Err(Error::CALL_NOT_FOUND);
        }
        Ok(())
    }

    async fn remove_pending(&self, call_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM pending_calls WHERE call_id = $1")
            .bind(call_id)
            .execute(&self.write)
            .await
            .map_err(internal("remove pending call"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_few_fixed_statement_sizes() {
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..=300 {
            let sizes: Vec<usize> = statement_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n, "{n}: {sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{n}: {sizes:?}");
            // Full statements, then at most one of each smaller size.
            let rest = &sizes[n / ROWS_PER_INSERT..];
            assert!(rest.windows(2).all(|w| w[0] > w[1]), "{n}: {sizes:?}");
            seen.extend(sizes);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
        assert_eq!(statement_sizes(61).collect::<Vec<_>>(), [32, 16, 8, 4, 1]);
        assert_eq!(statement_sizes(150).collect::<Vec<_>>(), [64, 64, 16, 4, 2]);
    }
}
