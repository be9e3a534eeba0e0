//! Detached calls accepted and not yet run, with their requests.

use fnrs_model::{Call, DateTime, Error, PendingCall};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::SqlStore;
use super::calls::insert_calls;
use super::dialect::*;
use crate::PendingSummary;
use crate::Result;

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

pub(super) async fn insert_pending(s: &SqlStore, call: &Call, p: &PendingCall) -> Result<()> {
    const OP: &str = "insert pending call";
    let mut tx = s.begin_write().await?;
    if insert_calls(s.backend, &mut tx, &[call], &[None]).await? == 0 {
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

pub(super) async fn list_pending(s: &SqlStore) -> Result<Vec<PendingCall>> {
    let rows = sqlx::query(
        "SELECT call_id, fn_id, trigger_id, method, url, headers, body, attempts \
         FROM pending_calls ORDER BY call_id",
    )
    .fetch_all(&s.read)
    .await
    .map_err(internal("list pending calls"))?;
    rows.iter().map(pending_row).collect()
}

pub(super) async fn list_pending_page(
    s: &SqlStore,
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
    .bind(super::dialect::limit(limit))
    .fetch_all(&s.read)
    .await
    .map_err(internal(OP))?;
    rows.iter()
        .map(|row| {
            Ok(PendingSummary {
                call_id: text(row, "call_id", OP)?,
                fn_id: text(row, "fn_id", OP)?,
                attempts: u32::try_from(int(row, "attempts", OP)?)
                    .map_err(|_| corrupt(OP, "attempts"))?,
                created_at: opt_time(row, "created_at", OP)?.unwrap_or(DateTime::from_millis(0)),
            })
        })
        .collect()
}

pub(super) async fn get_pending(s: &SqlStore, call_id: &str) -> Result<PendingCall> {
    let row = sqlx::query(
        "SELECT call_id, fn_id, trigger_id, method, url, headers, body, attempts \
         FROM pending_calls WHERE call_id = $1",
    )
    .bind(call_id)
    .fetch_optional(&s.read)
    .await
    .map_err(internal("get pending call"))?;
    pending_row(&row.ok_or(Error::CALL_NOT_FOUND)?)
}

pub(super) async fn bump_pending_attempts(s: &SqlStore, call_id: &str) -> Result<()> {
    let done = sqlx::query("UPDATE pending_calls SET attempts = attempts + 1 WHERE call_id = $1")
        .bind(call_id)
        .execute(&s.write)
        .await
        .map_err(internal("bump pending call"))?;
    if done.rows_affected() == 0 {
        return Err(Error::CALL_NOT_FOUND);
    }
    Ok(())
}

pub(super) async fn remove_pending(s: &SqlStore, call_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM pending_calls WHERE call_id = $1")
        .bind(call_id)
        .execute(&s.write)
        .await
        .map_err(internal("remove pending call"))?;
    Ok(())
}
