//! [`MemoryStore`]: the whole store in one mutex, for fast unit tests of the
//! crates above the store. Same semantics as the SQL store (the conformance
//! suite runs against both); nothing survives the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use fnrs_model::{
    App, AppFilter, Call, CallFilter, DateTime, Error, Fn, FnFilter, PendingCall, Trigger,
    TriggerFilter,
};
use parking_lot::Mutex;

use crate::{Datastore, PendingSummary, Result, TRIGGER_FN_NOT_IN_APP, page_limit};

#[derive(Default)]
struct Tables {
    apps: HashMap<String, App>,
    fns: HashMap<String, Fn>,
    triggers: HashMap<String, Trigger>,
    calls: HashMap<String, Call>,
    /// call id → (fn id, log bytes)
    logs: HashMap<String, (String, Vec<u8>)>,
    pending: HashMap<String, PendingCall>,
}

impl Tables {
    fn app_name_taken(&self, name: &str, except_id: &str) -> bool {
        self.apps
            .values()
            .any(|a| a.name == name && a.id != except_id)
    }

    fn fn_name_taken(&self, app_id: &str, name: &str, except_id: &str) -> bool {
        self.fns
            .values()
            .any(|f| f.app_id == app_id && f.name == name && f.id != except_id)
    }

    /// Checks a trigger against its app, fn and the uniqueness rules, in
    /// Fn's order.
    fn check_trigger(&self, t: &Trigger, except_id: &str) -> Result<()> {
        if !self.apps.contains_key(&t.app_id) {
            return Err(Error::APP_NOT_FOUND);
        }
        match self.fns.get(&t.fn_id) {
            None => return Err(Error::FN_NOT_FOUND),
            Some(f) if f.app_id != t.app_id => return Err(TRIGGER_FN_NOT_IN_APP),
            Some(_) => {}
        }
        let others = || self.triggers.values().filter(|o| o.id != except_id);
        if others().any(|o| o.app_id == t.app_id && o.kind == t.kind && o.source == t.source) {
            return Err(Error::TRIGGER_SOURCE_EXISTS);
        }
        if others().any(|o| o.app_id == t.app_id && o.fn_id == t.fn_id && o.name == t.name) {
            return Err(Error::TRIGGER_EXISTS);
        }
        Ok(())
    }

    /// Removes a fn's triggers, calls, logs and pending calls (not the fn).
    fn cascade_fn(&mut self, fn_id: &str) {
        self.triggers.retain(|_, t| t.fn_id != fn_id);
        self.calls.retain(|_, c| c.fn_id != fn_id);
        self.logs.retain(|_, (f, _)| f != fn_id);
        self.pending.retain(|_, p| p.fn_id != fn_id);
    }

    fn upsert_call(&mut self, call: &Call) {
        // Records of a fn deleted meanwhile are dropped, as in the SQL store.
        if self.fns.contains_key(&call.fn_id) {
            self.calls.insert(call.id.clone(), call.clone());
        }
    }
}

/// Sorts by (name, id), applies `name > cursor` and the page size.
fn page_by_name<T: Clone>(
    mut items: Vec<&T>,
    name: impl std::ops::Fn(&T) -> (&str, &str),
    cursor: Option<&str>,
    per_page: u32,
) -> Vec<T> {
    if let Some(c) = cursor {
        items.retain(|i| name(i).0 > c);
    }
    items.sort_by(|a, b| name(a).cmp(&name(b)));
    items
        .into_iter()
        .take(page_limit(per_page))
        .cloned()
        .collect()
}

/// The in-memory [`Datastore`].
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    /// How many times the recorder said it was behind, and not behind.
    behind_reports: [AtomicU64; 2],
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times [`Datastore::records_behind`] was told `(true, false)`
    /// (for tests of the recorder; the store itself has no writer to slow).
    pub fn behind_reports(&self) -> (u64, u64) {
        (
            self.behind_reports[0].load(Ordering::Relaxed),
            self.behind_reports[1].load(Ordering::Relaxed),
        )
    }
}

#[async_trait]
impl Datastore for MemoryStore {
    async fn insert_app(&self, app: &App) -> Result<()> {
        let mut t = self.tables.lock();
        if t.apps.contains_key(&app.id) || t.app_name_taken(&app.name, "") {
            return Err(Error::APP_ALREADY_EXISTS);
        }
        t.apps.insert(app.id.clone(), app.clone());
        Ok(())
    }

    async fn update_app(&self, app: &App) -> Result<()> {
        let mut t = self.tables.lock();
        if !t.apps.contains_key(&app.id) {
            return Err(Error::APP_NOT_FOUND);
        }
        if t.app_name_taken(&app.name, &app.id) {
            return Err(Error::APP_ALREADY_EXISTS);
        }
        let stored = t.apps.get_mut(&app.id).expect("checked above");
        let created_at = stored.created_at;
        *stored = app.clone();
        stored.created_at = created_at;
        Ok(())
    }

    async fn get_app(&self, app_id: &str) -> Result<App> {
        let t = self.tables.lock();
        t.apps.get(app_id).cloned().ok_or(Error::APP_NOT_FOUND)
    }

    async fn get_app_by_name(&self, name: &str) -> Result<App> {
        let t = self.tables.lock();
        t.apps
            .values()
            .find(|a| a.name == name)
            .cloned()
            .ok_or(Error::APP_NOT_FOUND)
    }

    async fn remove_app(&self, app_id: &str) -> Result<()> {
        let mut t = self.tables.lock();
        if t.apps.remove(app_id).is_none() {
            return Err(Error::APP_NOT_FOUND);
        }
        let fn_ids: Vec<String> = t
            .fns
            .values()
            .filter(|f| f.app_id == app_id)
            .map(|f| f.id.clone())
            .collect();
        for id in &fn_ids {
            t.fns.remove(id);
            t.cascade_fn(id);
        }
        t.triggers.retain(|_, tr| tr.app_id != app_id);
        t.calls.retain(|_, c| c.app_id != app_id);
        Ok(())
    }

    async fn list_apps(&self, filter: &AppFilter) -> Result<Vec<App>> {
        let t = self.tables.lock();
        let items = t
            .apps
            .values()
            .filter(|a| filter.name.as_ref().is_none_or(|n| &a.name == n))
            .collect();
        Ok(page_by_name(
            items,
            |a: &App| (&a.name, &a.id),
            filter.cursor.as_deref(),
            filter.per_page,
        ))
    }

    async fn insert_fn(&self, f: &Fn) -> Result<()> {
        let mut t = self.tables.lock();
        if !t.apps.contains_key(&f.app_id) {
            return Err(Error::APP_NOT_FOUND);
        }
        if t.fns.contains_key(&f.id) || t.fn_name_taken(&f.app_id, &f.name, "") {
            return Err(Error::FN_ALREADY_EXISTS);
        }
        t.fns.insert(f.id.clone(), f.clone());
        Ok(())
    }

    async fn update_fn(&self, f: &Fn) -> Result<()> {
        let mut t = self.tables.lock();
        let Some(stored) = t.fns.get(&f.id) else {
            return Err(Error::FN_NOT_FOUND);
        };
        let (app_id, created_at) = (stored.app_id.clone(), stored.created_at);
        if t.fn_name_taken(&app_id, &f.name, &f.id) {
            return Err(Error::FN_ALREADY_EXISTS);
        }
        let mut new = f.clone();
        new.app_id = app_id;
        new.created_at = created_at;
        t.fns.insert(f.id.clone(), new);
        Ok(())
    }

    async fn get_fn(&self, fn_id: &str) -> Result<Fn> {
        let t = self.tables.lock();
        t.fns.get(fn_id).cloned().ok_or(Error::FN_NOT_FOUND)
    }

    async fn remove_fn(&self, fn_id: &str) -> Result<()> {
        let mut t = self.tables.lock();
        if t.fns.remove(fn_id).is_none() {
            return Err(Error::FN_NOT_FOUND);
        }
        t.cascade_fn(fn_id);
        Ok(())
    }

    async fn list_fns(&self, filter: &FnFilter) -> Result<Vec<Fn>> {
        let t = self.tables.lock();
        let items = t
            .fns
            .values()
            .filter(|f| f.app_id == filter.app_id)
            .filter(|f| filter.name.as_ref().is_none_or(|n| &f.name == n))
            .collect();
        Ok(page_by_name(
            items,
            |f: &Fn| (&f.name, &f.id),
            filter.cursor.as_deref(),
            filter.per_page,
        ))
    }

    async fn insert_trigger(&self, tr: &Trigger) -> Result<()> {
        let mut t = self.tables.lock();
        t.check_trigger(tr, "")?;
        if t.triggers.contains_key(&tr.id) {
            return Err(Error::TRIGGER_EXISTS);
        }
        t.triggers.insert(tr.id.clone(), tr.clone());
        Ok(())
    }

    async fn update_trigger(&self, tr: &Trigger) -> Result<()> {
        let mut t = self.tables.lock();
        let Some(stored) = t.triggers.get(&tr.id) else {
            return Err(Error::TRIGGER_NOT_FOUND);
        };
        let mut new = tr.clone();
        new.app_id = stored.app_id.clone();
        new.created_at = stored.created_at;
        t.check_trigger(&new, &tr.id)?;
        t.triggers.insert(tr.id.clone(), new);
        Ok(())
    }

    async fn get_trigger(&self, trigger_id: &str) -> Result<Trigger> {
        let t = self.tables.lock();
        t.triggers
            .get(trigger_id)
            .cloned()
            .ok_or(Error::TRIGGER_NOT_FOUND)
    }

    async fn get_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Trigger> {
        let t = self.tables.lock();
        t.triggers
            .values()
            .find(|tr| tr.app_id == app_id && tr.kind == kind && tr.source == source)
            .cloned()
            .ok_or(Error::TRIGGER_NOT_FOUND)
    }

    async fn remove_trigger(&self, trigger_id: &str) -> Result<()> {
        let mut t = self.tables.lock();
        t.triggers
            .remove(trigger_id)
            .map(|_| ())
            .ok_or(Error::TRIGGER_NOT_FOUND)
    }

    async fn list_triggers(&self, filter: &TriggerFilter) -> Result<Vec<Trigger>> {
        let t = self.tables.lock();
        let items = t
            .triggers
            .values()
            .filter(|tr| tr.app_id == filter.app_id)
            .filter(|tr| filter.fn_id.as_ref().is_none_or(|f| &tr.fn_id == f))
            .filter(|tr| filter.name.as_ref().is_none_or(|n| &tr.name == n))
            .collect();
        Ok(page_by_name(
            items,
            |tr: &Trigger| (&tr.name, &tr.id),
            filter.cursor.as_deref(),
            filter.per_page,
        ))
    }

    fn records_behind(&self, behind: bool) {
        self.behind_reports[usize::from(!behind)].fetch_add(1, Ordering::Relaxed);
    }

    async fn put_calls(&self, calls: &[Call]) -> Result<()> {
        let mut t = self.tables.lock();
        for c in calls {
            t.upsert_call(c);
        }
        Ok(())
    }

    async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        let mut t = self.tables.lock();
        for (call_id, fn_id, bytes) in logs {
            // Nothing to keep for an empty log (as the SQL store).
            if bytes.is_empty() || !t.fns.contains_key(fn_id) {
                continue;
            }
            t.logs
                .entry(call_id.clone())
                .or_insert_with(|| (fn_id.clone(), Vec::new()))
                .1
                .extend_from_slice(bytes);
        }
        Ok(())
    }

    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call> {
        let t = self.tables.lock();
        t.calls
            .get(call_id)
            .filter(|c| c.fn_id == fn_id)
            .cloned()
            .ok_or(Error::CALL_NOT_FOUND)
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>> {
        let t = self.tables.lock();
        let mut items: Vec<&Call> = t
            .calls
            .values()
            .filter(|c| c.fn_id == filter.fn_id)
            .filter(|c| filter.cursor.as_ref().is_none_or(|cur| &c.id < cur))
            .collect();
        items.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(items
            .into_iter()
            .take(page_limit(filter.per_page))
            .cloned()
            .collect())
    }

    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>> {
        let t = self.tables.lock();
        t.logs
            .get(call_id)
            .map(|(_, l)| l.clone())
            .ok_or(Error::CALL_LOG_NOT_FOUND)
    }

    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64> {
        let mut t = self.tables.lock();
        let mut by_fn: HashMap<&str, Vec<&str>> = HashMap::new();
        for c in t.calls.values() {
            by_fn.entry(&c.fn_id).or_default().push(&c.id);
        }
        let mut doomed = Vec::new();
        for ids in by_fn.values_mut() {
            ids.sort_unstable_by(|a, b| b.cmp(a));
            doomed.extend(
                ids.iter()
                    .skip(keep_per_fn as usize)
                    .filter(|id| !t.pending.contains_key(**id))
                    .map(|id| id.to_string()),
            );
        }
        for id in &doomed {
            t.calls.remove(id);
            t.logs.remove(id);
        }
        Ok(doomed.len() as u64)
    }

    async fn insert_pending(&self, call: &Call, pending: &PendingCall) -> Result<()> {
        let mut t = self.tables.lock();
        if !t.fns.contains_key(&pending.fn_id) || !t.fns.contains_key(&call.fn_id) {
            return Err(Error::FN_NOT_FOUND);
        }
        t.upsert_call(call);
        t.pending.insert(pending.call_id.clone(), pending.clone());
        Ok(())
    }

    async fn list_pending(&self) -> Result<Vec<PendingCall>> {
        let t = self.tables.lock();
        let mut items: Vec<PendingCall> = t.pending.values().cloned().collect();
        items.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        Ok(items)
    }

    async fn list_pending_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingSummary>> {
        let t = self.tables.lock();
        let mut items: Vec<&PendingCall> = t
            .pending
            .values()
            .filter(|p| after.is_none_or(|a| p.call_id.as_str() > a))
            .collect();
        items.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        Ok(items
            .into_iter()
            .take(page_limit(limit))
            .map(|p| PendingSummary {
                call_id: p.call_id.clone(),
                fn_id: p.fn_id.clone(),
                attempts: p.attempts,
                created_at: t
                    .calls
                    .get(&p.call_id)
                    .map_or(DateTime::from_millis(0), |c| c.created_at),
            })
            .collect())
    }

    async fn get_pending(&self, call_id: &str) -> Result<PendingCall> {
        let t = self.tables.lock();
        t.pending.get(call_id).cloned().ok_or(Error::CALL_NOT_FOUND)
    }

    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()> {
        let mut t = self.tables.lock();
        let p = t.pending.get_mut(call_id).ok_or(Error::CALL_NOT_FOUND)?;
        p.attempts = p.attempts.saturating_add(1);
        Ok(())
    }

    async fn remove_pending(&self, call_id: &str) -> Result<()> {
        self.tables.lock().pending.remove(call_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnrs_model::DateTime;

    fn app(name: &str) -> App {
        App {
            id: fnrs_model::new_id(),
            name: name.into(),
            config: Default::default(),
            annotations: Default::default(),
            syslog_url: None,
            shape: String::new(),
            created_at: DateTime::now(),
            updated_at: DateTime::now(),
        }
    }

    #[tokio::test]
    async fn apps_insert_get_conflict_remove() {
        let s = MemoryStore::new();
        let a = app("a");
        s.insert_app(&a).await.unwrap();
        assert_eq!(s.get_app(&a.id).await.unwrap(), a);
        assert_eq!(s.get_app_by_name("a").await.unwrap(), a);
        assert_eq!(
            s.insert_app(&app("a")).await.unwrap_err(),
            Error::APP_ALREADY_EXISTS
        );
        s.remove_app(&a.id).await.unwrap();
        assert_eq!(s.get_app(&a.id).await.unwrap_err(), Error::APP_NOT_FOUND);
        assert_eq!(s.remove_app(&a.id).await.unwrap_err(), Error::APP_NOT_FOUND);
    }
}
