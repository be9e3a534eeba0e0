//! Call records and their logs (group-committed batches), retention.

use std::borrow::Cow;

use fnrs_model::{Call, CallFilter, CallStatus, CallType, Error};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::dialect::*;
use super::{Backend, SqlStore};
use crate::Result;

macro_rules! call_cols {
    () => {
        "id, fn_id, app_id, trigger_id, status, type, method, url, created_at, started_at, \
         completed_at, http_status, error, stats"
    };
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

/// Inserts or replaces call records in one statement, skipping those whose
/// fn is gone. Returns how many rows were written.
pub(super) async fn insert_calls(
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

pub(super) async fn put_calls(s: &SqlStore, calls: &[Call]) -> Result<()> {
    put_records(s, calls, &[]).await
}

pub(super) async fn put_logs(s: &SqlStore, logs: &[(String, String, Vec<u8>)]) -> Result<()> {
    put_records(s, &[], logs).await
}

pub(super) async fn put_records(
    s: &SqlStore,
    calls: &[Call],
    logs: &[(String, String, Vec<u8>)],
) -> Result<()> {
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
    let mut tx = match s.backend {
        Backend::Sqlite => s.records.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => s.records.begin().await,
    }
    .map_err(internal("begin"))?;
    if s.backend == Backend::Postgres {
        // As on SQLite: no wait for the WAL flush (a crash of fnrs loses
        // nothing; one of PostgreSQL's host may lose the last records).
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(internal("put records"))?;
    }
    divert_stored_logs(s.backend, &mut tx, &calls, &mut own, &mut rest).await?;
    let mut at = 0;
    for n in statement_sizes(calls.len()) {
        insert_calls(s.backend, &mut tx, &calls[at..at + n], &own[at..at + n]).await?;
        at += n;
    }
    let mut at = 0;
    for n in statement_sizes(rest.len()) {
        let sql = multi_row_insert(
            s.backend,
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

pub(super) async fn get_call(s: &SqlStore, fn_id: &str, call_id: &str) -> Result<Call> {
    let row = sqlx::query(concat!(
        "SELECT ",
        call_cols!(),
        " FROM calls WHERE id = $1 AND fn_id = $2"
    ))
    .bind(call_id)
    .bind(fn_id)
    .fetch_optional(&s.read)
    .await
    .map_err(internal("get call"))?;
    call_row(&row.ok_or(Error::CALL_NOT_FOUND)?)
}

pub(super) async fn list_calls(s: &SqlStore, filter: &CallFilter) -> Result<Vec<Call>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        call_cols!(),
        " FROM calls WHERE fn_id = $1 AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(&filter.fn_id)
    .bind(&filter.cursor)
    .bind(limit(filter.per_page))
    .fetch_all(&s.read)
    .await
    .map_err(internal("list calls"))?;
    rows.iter().map(call_row).collect()
}

pub(super) async fn get_log(s: &SqlStore, call_id: &str) -> Result<Vec<u8>> {
    // The part kept in the call row first, then the appended chunks.
    let chunks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM (SELECT log AS data, 0 AS part, 0 AS seq FROM calls \
         WHERE id = $1 AND log IS NOT NULL \
         UNION ALL SELECT data, 1 AS part, seq FROM call_logs WHERE call_id = $1) l \
         ORDER BY part, seq",
    )
    .bind(call_id)
    .fetch_all(&s.read)
    .await
    .map_err(internal("get log"))?;
    if chunks.is_empty() {
        return Err(Error::CALL_LOG_NOT_FOUND);
    }
    Ok(chunks.concat())
}

pub(super) async fn prune_calls(s: &SqlStore, keep_per_fn: u32) -> Result<u64> {
    const OP: &str = "prune calls";
    let mut tx = s.begin_write().await?;
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
