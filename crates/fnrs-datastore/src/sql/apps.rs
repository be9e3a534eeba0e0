//! Apps.

use fnrs_model::{App, AppFilter, Error};
use sqlx::any::AnyRow;

use super::SqlStore;
use super::dialect::*;
use crate::Result;

macro_rules! app_cols {
    () => {
        "id, name, config, annotations, syslog_url, shape, created_at, updated_at"
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

pub(super) async fn insert_app(s: &SqlStore, app: &App) -> Result<()> {
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
    .execute(&s.write)
    .await
    .map_err(unique_or("insert app", Error::APP_ALREADY_EXISTS))?;
    Ok(())
}

pub(super) async fn update_app(s: &SqlStore, app: &App) -> Result<()> {
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
    .execute(&s.write)
    .await
    .map_err(unique_or("update app", Error::APP_ALREADY_EXISTS))?;
    if done.rows_affected() == 0 {
        return Err(Error::APP_NOT_FOUND);
    }
    Ok(())
}

pub(super) async fn get_app(s: &SqlStore, app_id: &str) -> Result<App> {
    let row = sqlx::query(concat!("SELECT ", app_cols!(), " FROM apps WHERE id = $1"))
        .bind(app_id)
        .fetch_optional(&s.read)
        .await
        .map_err(internal("get app"))?;
    app_row(&row.ok_or(Error::APP_NOT_FOUND)?)
}

pub(super) async fn get_app_by_name(s: &SqlStore, name: &str) -> Result<App> {
    let row = sqlx::query(concat!(
        "SELECT ",
        app_cols!(),
        " FROM apps WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&s.read)
    .await
    .map_err(internal("get app by name"))?;
    app_row(&row.ok_or(Error::APP_NOT_FOUND)?)
}

pub(super) async fn remove_app(s: &SqlStore, app_id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM apps WHERE id = $1")
        .bind(app_id)
        .execute(&s.write)
        .await
        .map_err(internal("remove app"))?;
    if done.rows_affected() == 0 {
        return Err(Error::APP_NOT_FOUND);
    }
    Ok(())
}

pub(super) async fn list_apps(s: &SqlStore, filter: &AppFilter) -> Result<Vec<App>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        app_cols!(),
        " FROM apps WHERE ($1 IS NULL OR name = $1) AND ($2 IS NULL OR name > $2) \
         ORDER BY name LIMIT $3"
    ))
    .bind(&filter.name)
    .bind(&filter.cursor)
    .bind(limit(filter.per_page))
    .fetch_all(&s.read)
    .await
    .map_err(internal("list apps"))?;
    rows.iter().map(app_row).collect()
}
