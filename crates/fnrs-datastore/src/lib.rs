//! The store behind fnrs: one [`Datastore`] trait, implemented on SQL (SQLite
//! by default, PostgreSQL for several nodes) and in memory (tests).
//!
//! Errors are [`fnrs_model::Error`] so that "not found" and uniqueness
//! conflicts come out with Fn's status and message; anything else is a 500.

use async_trait::async_trait;
use fnrs_model::{
    App, AppFilter, Call, CallFilter, Error, Fn, FnFilter, PendingCall, Trigger, TriggerFilter,
};

/// Result of every store operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Persistent state of fnrs. Implementations must be safe to share between
/// tasks; every acknowledged write is durable (committed) when it returns.
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
    /// One call of a fn. Missing → 404 "Call not found".
    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call>;
    /// A fn's calls, newest (largest id) first, `id < cursor`, at most `per_page`.
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>>;
    /// A call's log. Missing → 404 "Call log not found".
    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>>;
    /// Delete the oldest call records and logs of every fn beyond `keep_per_fn`.
    /// Returns how many were deleted.
    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64>;

    // --- detached calls not yet run ---
    /// Persist a detached call and its request together (one transaction).
    async fn insert_pending(&self, call: &Call, pending: &PendingCall) -> Result<()>;
    /// Every pending call, oldest first.
    async fn list_pending(&self) -> Result<Vec<PendingCall>>;
    /// Record one more attempt at a pending call (before running it again).
    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()>;
    /// Forget a pending call (it ran, or its fn is gone).
    async fn remove_pending(&self, call_id: &str) -> Result<()>;
}
