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
//!
//! One module per thing stored (`apps`, `fns`, `triggers`, `calls` with
//! their logs, `pending`), `schema` for the migrations, `conn` for opening
//! the pools, `dialect` for what they share (errors, encodings, multi-row
//! statements). This file holds the types and the [`Datastore`] impl, whose
//! methods hand over to those modules.

mod apps;
mod calls;
mod conn;
mod dialect;
mod fns;
mod pending;
mod schema;
mod triggers;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fnrs_model::{
    App, AppFilter, Call, CallFilter, Fn, FnFilter, PendingCall, Trigger, TriggerFilter,
};
use sqlx::AnyPool;

use crate::prio::WriterPriority;
use crate::{Datastore, PendingSummary, Result};

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

/// Each method is in the module of what it stores.
#[async_trait]
impl Datastore for SqlStore {
    async fn insert_app(&self, app: &App) -> Result<()> {
        apps::insert_app(self, app).await
    }

    async fn update_app(&self, app: &App) -> Result<()> {
        apps::update_app(self, app).await
    }

    async fn get_app(&self, app_id: &str) -> Result<App> {
        apps::get_app(self, app_id).await
    }

    async fn get_app_by_name(&self, name: &str) -> Result<App> {
        apps::get_app_by_name(self, name).await
    }

    async fn remove_app(&self, app_id: &str) -> Result<()> {
        apps::remove_app(self, app_id).await
    }

    async fn list_apps(&self, filter: &AppFilter) -> Result<Vec<App>> {
        apps::list_apps(self, filter).await
    }

    async fn insert_fn(&self, f: &Fn) -> Result<()> {
        fns::insert_fn(self, f).await
    }

    async fn update_fn(&self, f: &Fn) -> Result<()> {
        fns::update_fn(self, f).await
    }

    async fn get_fn(&self, fn_id: &str) -> Result<Fn> {
        fns::get_fn(self, fn_id).await
    }

    async fn remove_fn(&self, fn_id: &str) -> Result<()> {
        fns::remove_fn(self, fn_id).await
    }

    async fn list_fns(&self, filter: &FnFilter) -> Result<Vec<Fn>> {
        fns::list_fns(self, filter).await
    }

    async fn insert_trigger(&self, t: &Trigger) -> Result<()> {
        triggers::insert_trigger(self, t).await
    }

    async fn update_trigger(&self, t: &Trigger) -> Result<()> {
        triggers::update_trigger(self, t).await
    }

    async fn get_trigger(&self, trigger_id: &str) -> Result<Trigger> {
        triggers::get_trigger(self, trigger_id).await
    }

    async fn get_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Trigger> {
        triggers::get_trigger_by_source(self, app_id, kind, source).await
    }

    async fn remove_trigger(&self, trigger_id: &str) -> Result<()> {
        triggers::remove_trigger(self, trigger_id).await
    }

    async fn list_triggers(&self, filter: &TriggerFilter) -> Result<Vec<Trigger>> {
        triggers::list_triggers(self, filter).await
    }

    async fn put_calls(&self, calls: &[Call]) -> Result<()> {
        calls::put_calls(self, calls).await
    }

    async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        calls::put_logs(self, logs).await
    }

    fn records_behind(&self, behind: bool) {
        self.records_prio.set_behind(behind);
    }

    async fn put_records(&self, calls: &[Call], logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        calls::put_records(self, calls, logs).await
    }

    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call> {
        calls::get_call(self, fn_id, call_id).await
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>> {
        calls::list_calls(self, filter).await
    }

    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>> {
        calls::get_log(self, call_id).await
    }

    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64> {
        calls::prune_calls(self, keep_per_fn).await
    }

    async fn insert_pending(&self, call: &Call, p: &PendingCall) -> Result<()> {
        pending::insert_pending(self, call, p).await
    }

    async fn list_pending(&self) -> Result<Vec<PendingCall>> {
        pending::list_pending(self).await
    }

    async fn list_pending_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingSummary>> {
        pending::list_pending_page(self, after, limit).await
    }

    async fn get_pending(&self, call_id: &str) -> Result<PendingCall> {
        pending::get_pending(self, call_id).await
    }

    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()> {
        pending::bump_pending_attempts(self, call_id).await
    }

    async fn remove_pending(&self, call_id: &str) -> Result<()> {
        pending::remove_pending(self, call_id).await
    }
}
