//! Triggers, with Fn's checks against their app, fn and each other.

use fnrs_model::{Error, Trigger, TriggerFilter};
use sqlx::any::AnyRow;

use super::SqlStore;
use super::dialect::*;
use crate::Result;
use crate::TRIGGER_FN_NOT_IN_APP;

macro_rules! trigger_cols {
    () => {
        "id, app_id, fn_id, name, type, source, annotations, created_at, updated_at"
    };
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

pub(super) async fn insert_trigger(s: &SqlStore, t: &Trigger) -> Result<()> {
    s.write_trigger(t, true).await
}

pub(super) async fn update_trigger(s: &SqlStore, t: &Trigger) -> Result<()> {
    s.write_trigger(t, false).await
}

pub(super) async fn get_trigger(s: &SqlStore, trigger_id: &str) -> Result<Trigger> {
    let row = sqlx::query(concat!(
        "SELECT ",
        trigger_cols!(),
        " FROM triggers WHERE id = $1"
    ))
    .bind(trigger_id)
    .fetch_optional(&s.read)
    .await
    .map_err(internal("get trigger"))?;
    trigger_row(&row.ok_or(Error::TRIGGER_NOT_FOUND)?)
}

pub(super) async fn get_trigger_by_source(
    s: &SqlStore,
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
    .fetch_optional(&s.read)
    .await
    .map_err(internal("get trigger by source"))?;
    trigger_row(&row.ok_or(Error::TRIGGER_NOT_FOUND)?)
}

pub(super) async fn remove_trigger(s: &SqlStore, trigger_id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM triggers WHERE id = $1")
        .bind(trigger_id)
        .execute(&s.write)
        .await
        .map_err(internal("remove trigger"))?;
    if done.rows_affected() == 0 {
        return Err(Error::TRIGGER_NOT_FOUND);
    }
    Ok(())
}

pub(super) async fn list_triggers(s: &SqlStore, filter: &TriggerFilter) -> Result<Vec<Trigger>> {
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
    .fetch_all(&s.read)
    .await
    .map_err(internal("list triggers"))?;
    rows.iter().map(trigger_row).collect()
}
