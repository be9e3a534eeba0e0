//! The store behind fnrs: one [`Datastore`] trait, implemented on SQL
//! ([`SqlStore`]: SQLite by default, PostgreSQL for several nodes, opened from
//! Fn's `FN_DB_URL`) and in memory ([`MemoryStore`], for tests), plus a read
//! cache for the invoke path ([`CachedStore`]: route every write through it so
//! that it invalidates). With the `testkit` feature, `conformance` holds the
//! suite every implementation passes, and builders for test data.
//!
//! Errors are [`fnrs_model::Error`] so that "not found" and uniqueness
//! conflicts come out with Fn's status and message; anything else is a 500.

use async_trait::async_trait;
use fnrs_model::{
    App, AppFilter, Call, CallFilter, DateTime, Error, Fn, FnFilter, PendingCall, Trigger,
    TriggerFilter,
};

mod cache;
#[cfg(feature = "testkit")]
pub mod conformance;
mod memory;
mod prio;
mod sql;
mod url;

pub use cache::CachedStore;
pub use memory::MemoryStore;
pub use prio::at_low_priority;
pub use sql::{Backend, SqlOptions, SqlStore};
pub use url::{DbUrl, redact};

/// Why a [`SqlStore`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `FN_DB_URL` is not one of the accepted forms.
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// The SQLite file's directory could not be made.
    #[error("cannot create database directory {}: {source}", path.display())]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// PostgreSQL did not answer within the allowed attempts.
    #[error("database {url} not reachable after {attempts} attempts: {source}")]
    Unreachable {
        url: String,
        attempts: u32,
        source: sqlx::Error,
    },
    /// The database answered but could not be opened or set up.
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    /// Applying the schema migrations failed.
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

/// Result of every store operation.
pub type Result<T> = std::result::Result<T, Error>;

/// A trigger's fn belongs to another app (Fn's 400).
pub const TRIGGER_FN_NOT_IN_APP: Error =
    Error::new(400, "Invalid Fn ID - not owned by specified app");

/// The number of rows a page of `per_page` may hold: `per_page`, or no
/// limit when it is 0 (the API applies Fn's default of 30 before calling).
pub(crate) fn page_limit(per_page: u32) -> usize {
    if per_page == 0 {
        usize::MAX
    } else {
        per_page as usize
    }
}

/// A pending detached call without its request: what a listing of many
/// carries (see [`Datastore::list_pending_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSummary {
    pub call_id: String,
    pub fn_id: String,
    /// Attempts made so far (see [`Datastore::bump_pending_attempts`]).
    pub attempts: u32,
    /// When the call was accepted: its call record's `created_at` (the
    /// epoch should the record be missing).
    pub created_at: DateTime,
}

/// Persistent state of fnrs. Implementations must be safe to share between
/// tasks; every acknowledged write is durable (committed) when it returns.
///
/// Updates replace every field but the id, `created_at` and the owner
/// (`app_id` of fns and triggers), which stay as stored. Lists are ordered by
/// name (calls: by id, newest first) and `per_page == 0` means no limit.
/// Call records and logs of a fn that no longer exists are dropped silently
/// (the fn was deleted while the call ran).
#[async_trait]
pub trait Datastore: Send + Sync + 'static {
    // --- apps ---
    /// Insert a new app. Name taken → 409 "App already exists".
    async fn insert_app(&self, app: &App) -> Result<()>;
    /// Replace a stored app (by id). Missing → 404 "App not found".
    async fn update_app(&self, app: &App) -> Result<()>;
    async fn get_app(&self, app_id: &str) -> Result<App>;
    async fn get_app_by_name(&self, name: &str) -> Result<App>;
    /// Remove an app with its fns, triggers, calls and logs. Missing → 404.
    async fn remove_app(&self, app_id: &str) -> Result<()>;
    /// Apps ordered by name, `name > cursor`, at most `per_page`.
    async fn list_apps(&self, filter: &AppFilter) -> Result<Vec<App>>;

    // --- fns ---
    /// Insert a new fn. App missing → 404 "App not found"; (app_id, name)
    /// taken → 409 "Fn with specified name already exists".
    async fn insert_fn(&self, f: &Fn) -> Result<()>;
    /// Replace a stored fn (by id). Missing → 404 "Fn not found".
    async fn update_fn(&self, f: &Fn) -> Result<()>;
    async fn get_fn(&self, fn_id: &str) -> Result<Fn>;
    /// Remove a fn with its triggers, calls and logs. Missing → 404.
    async fn remove_fn(&self, fn_id: &str) -> Result<()>;
    /// Fns of one app ordered by name, `name > cursor`, at most `per_page`.
    async fn list_fns(&self, filter: &FnFilter) -> Result<Vec<Fn>>;

    // --- triggers ---
    /// Insert a new trigger. App/fn missing → 404; (app_id, type, source)
    /// taken → 409 "Trigger with the same type and source exists on this app";
    /// (app_id, fn_id, name) taken → 409 "Trigger already exists".
    async fn insert_trigger(&self, t: &Trigger) -> Result<()>;
    /// Replace a stored trigger (by id), same conflicts as insert.
    /// Missing → 404 "Trigger not found"; a fn of another app → 400
    /// ([`TRIGGER_FN_NOT_IN_APP`]).
    async fn update_trigger(&self, t: &Trigger) -> Result<()>;
    async fn get_trigger(&self, trigger_id: &str) -> Result<Trigger>;
    async fn get_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Trigger>;
    async fn remove_trigger(&self, trigger_id: &str) -> Result<()>;
    async fn list_triggers(&self, filter: &TriggerFilter) -> Result<Vec<Trigger>>;

    // --- calls and logs ---
    /// Insert or replace call records, in one transaction (group commit).
    async fn put_calls(&self, calls: &[Call]) -> Result<()>;
    /// Append to or create call logs `(call_id, fn_id, bytes)`, in one transaction.
    async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> Result<()>;
    /// Call records and logs together, in one transaction where the backend
    /// can (the agent's group commit: one commit per batch of calls).
    async fn put_records(&self, calls: &[Call], logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        self.put_calls(calls).await?;
        self.put_logs(logs).await
    }
    /// The recorder tells the store whether it is behind (records wait
    /// beyond one batch) before each batch; a store may run its writer at
    /// low priority while it is not. Cheap: called once per batch, from the
    /// recorder's task. Default: nothing.
    fn records_behind(&self, behind: bool) {
        let _ = behind;
    }
    /// One call of a fn. Missing → 404 "Call not found".
    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call>;
    /// A fn's calls, newest (largest id) first, `id < cursor`, at most `per_page`.
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>>;
    /// A call's log. Missing → 404 "Call log not found".
    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>>;
    /// Delete the oldest call records and logs of every fn beyond `keep_per_fn`
    /// (calls still pending are kept). Returns how many records were deleted.
    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64>;

    // --- detached calls not yet run ---
    /// Persist a detached call and its request together (one transaction).
    /// Fn missing → 404 "Fn not found".
    async fn insert_pending(&self, call: &Call, pending: &PendingCall) -> Result<()>;
    /// Every pending call, oldest first.
    async fn list_pending(&self) -> Result<Vec<PendingCall>>;
    /// Pending calls without their requests, oldest (smallest id) first,
    /// `call_id > after`, at most `limit` (0 = no limit): a page to go
    /// through many without holding their bodies. The default reads every
    /// whole call through [`Datastore::list_pending`]; the stores override
    /// it.
    async fn list_pending_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingSummary>> {
        let mut page = Vec::new();
        for p in self.list_pending().await? {
            if after.is_some_and(|a| p.call_id.as_str() <= a) {
                continue;
            }
            if page.len() >= page_limit(limit) {
                break;
            }
            let created_at = self.get_call(&p.fn_id, &p.call_id).await?.created_at;
            page.push(PendingSummary {
                call_id: p.call_id,
                fn_id: p.fn_id,
                attempts: p.attempts,
                created_at,
            });
        }
        Ok(page)
    }
    /// One pending call with its request. Missing → 404 "Call not found".
    /// The default searches [`Datastore::list_pending`]; the stores
    /// override it.
    async fn get_pending(&self, call_id: &str) -> Result<PendingCall> {
        self.list_pending()
            .await?
            .into_iter()
            .find(|p| p.call_id == call_id)
            .ok_or(Error::CALL_NOT_FOUND)
    }
    /// Record one more attempt at a pending call (before running it again).
    /// Missing → 404 "Call not found".
    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()>;
    /// Forget a pending call (it ran, or its fn is gone). Missing is fine.
    async fn remove_pending(&self, call_id: &str) -> Result<()>;
}

/// A shared store is a store: lets `CachedStore<Arc<dyn Datastore>>` and
/// friends wrap whatever the server opened.
#[async_trait]
impl<T: Datastore + ?Sized> Datastore for std::sync::Arc<T> {
    async fn insert_app(&self, app: &App) -> Result<()> {
        (**self).insert_app(app).await
    }
    async fn update_app(&self, app: &App) -> Result<()> {
        (**self).update_app(app).await
    }
    async fn get_app(&self, app_id: &str) -> Result<App> {
        (**self).get_app(app_id).await
    }
    async fn get_app_by_name(&self, name: &str) -> Result<App> {
        (**self).get_app_by_name(name).await
    }
    async fn remove_app(&self, app_id: &str) -> Result<()> {
        (**self).remove_app(app_id).await
    }
    async fn list_apps(&self, filter: &AppFilter) -> Result<Vec<App>> {
        (**self).list_apps(filter).await
    }
    async fn insert_fn(&self, f: &Fn) -> Result<()> {
        (**self).insert_fn(f).await
    }
    async fn update_fn(&self, f: &Fn) -> Result<()> {
        (**self).update_fn(f).await
    }
    async fn get_fn(&self, fn_id: &str) -> Result<Fn> {
        (**self).get_fn(fn_id).await
    }
    async fn remove_fn(&self, fn_id: &str) -> Result<()> {
        (**self).remove_fn(fn_id).await
    }
    async fn list_fns(&self, filter: &FnFilter) -> Result<Vec<Fn>> {
        (**self).list_fns(filter).await
    }
    async fn insert_trigger(&self, t: &Trigger) -> Result<()> {
        (**self).insert_trigger(t).await
    }
    async fn update_trigger(&self, t: &Trigger) -> Result<()> {
        (**self).update_trigger(t).await
    }
    async fn get_trigger(&self, trigger_id: &str) -> Result<Trigger> {
        (**self).get_trigger(trigger_id).await
    }
    async fn get_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Trigger> {
        (**self).get_trigger_by_source(app_id, kind, source).await
    }
    async fn remove_trigger(&self, trigger_id: &str) -> Result<()> {
        (**self).remove_trigger(trigger_id).await
    }
    async fn list_triggers(&self, filter: &TriggerFilter) -> Result<Vec<Trigger>> {
        (**self).list_triggers(filter).await
    }
    async fn put_calls(&self, calls: &[Call]) -> Result<()> {
        (**self).put_calls(calls).await
    }
    async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        (**self).put_logs(logs).await
    }
    async fn put_records(&self, calls: &[Call], logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        (**self).put_records(calls, logs).await
    }
    fn records_behind(&self, behind: bool) {
        (**self).records_behind(behind)
    }
    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call> {
        (**self).get_call(fn_id, call_id).await
    }
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>> {
        (**self).list_calls(filter).await
    }
    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>> {
        (**self).get_log(call_id).await
    }
    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64> {
        (**self).prune_calls(keep_per_fn).await
    }
    async fn insert_pending(&self, call: &Call, pending: &PendingCall) -> Result<()> {
        (**self).insert_pending(call, pending).await
    }
    async fn list_pending(&self) -> Result<Vec<PendingCall>> {
        (**self).list_pending().await
    }
    async fn list_pending_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingSummary>> {
        (**self).list_pending_page(after, limit).await
    }
    async fn get_pending(&self, call_id: &str) -> Result<PendingCall> {
        (**self).get_pending(call_id).await
    }
    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()> {
        (**self).bump_pending_attempts(call_id).await
    }
    async fn remove_pending(&self, call_id: &str) -> Result<()> {
        (**self).remove_pending(call_id).await
    }
}
