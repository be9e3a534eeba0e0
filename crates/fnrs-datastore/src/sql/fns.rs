//! Fns.

use fnrs_model::{Error, Fn, FnFilter};
use sqlx::any::AnyRow;

use super::SqlStore;
use super::dialect::*;
use crate::Result;

macro_rules! fn_cols {
    () => {
        "id, app_id, name, image, format, memory, timeout, idle_timeout, config, annotations, \
         shape, created_at, updated_at"
    };
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

pub(super) async fn insert_fn(s: &SqlStore, f: &Fn) -> Result<()> {
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
    .execute(&s.write)
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

pub(super) async fn update_fn(s: &SqlStore, f: &Fn) -> Result<()> {
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
    .execute(&s.write)
    .await
    .map_err(unique_or("update fn", Error::FN_ALREADY_EXISTS))?;
    if done.rows_affected() == 0 {
        return Err(Error::FN_NOT_FOUND);
    }
    Ok(())
}

pub(super) async fn get_fn(s: &SqlStore, fn_id: &str) -> Result<Fn> {
    let row = sqlx::query(concat!("SELECT ", fn_cols!(), " FROM fns WHERE id = $1"))
        .bind(fn_id)
        .fetch_optional(&s.read)
        .await
        .map_err(internal("get fn"))?;
    fn_row(&row.ok_or(Error::FN_NOT_FOUND)?)
}

pub(super) async fn remove_fn(s: &SqlStore, fn_id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM fns WHERE id = $1")
        .bind(fn_id)
        .execute(&s.write)
        .await
        .map_err(internal("remove fn"))?;
    if done.rows_affected() == 0 {
        return Err(Error::FN_NOT_FOUND);
    }
    Ok(())
}

pub(super) async fn list_fns(s: &SqlStore, filter: &FnFilter) -> Result<Vec<Fn>> {
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
    .fetch_all(&s.read)
    .await
    .map_err(internal("list fns"))?;
    rows.iter().map(fn_row).collect()
}
