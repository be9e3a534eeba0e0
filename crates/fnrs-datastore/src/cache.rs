//! [`CachedStore`]: apps, fns and triggers-by-source answered from memory
//! after their first load, for the invoke hot path.
//!
//! Lookups take a read lock for a hash probe and clone an `Arc`; the lock is
//! never held across an await. Every write of an app, fn or trigger made
//! through this store clears the whole cache (writes are rare); a load racing
//! with a write is not cached (a generation counter tells). Writes made by
//! another process (another fnrs node on the same database) are not seen
//! until [`CachedStore::invalidate_all`] is called.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use fnrs_model::{
    App, AppFilter, Call, CallFilter, Fn, FnFilter, PendingCall, Trigger, TriggerFilter,
};
use parking_lot::RwLock;

use crate::{Datastore, PendingSummary, Result};

/// app id → trigger type → source → trigger (nested so that a hit needs no
/// allocation).
type TriggerMap = HashMap<String, HashMap<String, HashMap<String, Arc<Trigger>>>>;

#[derive(Default)]
struct Maps {
    /// Bumped by every invalidation.
    generation: u64,
    apps: HashMap<String, Arc<App>>,
    app_names: HashMap<String, Arc<App>>,
    fns: HashMap<String, Arc<Fn>>,
    triggers: TriggerMap,
}

/// A read-through cache in front of any [`Datastore`]. Cheap to clone
/// (clones share the cache) when `S` is.
pub struct CachedStore<S> {
    inner: S,
    maps: Arc<RwLock<Maps>>,
}

impl<S: Clone> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            maps: self.maps.clone(),
        }
    }
}

/// An app is cached under its id and its name.
fn put_app(m: &mut Maps, a: &Arc<App>) {
    m.apps.insert(a.id.clone(), a.clone());
    m.app_names.insert(a.name.clone(), a.clone());
}

impl<S: Datastore> CachedStore<S> {
    /// Wraps `inner` with an empty cache.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            maps: Arc::default(),
        }
    }

    /// The store behind the cache (writes to it directly are not seen by
    /// the cache until [`CachedStore::invalidate_all`]).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Forgets everything cached.
    pub fn invalidate_all(&self) {
        let mut m = self.maps.write();
        m.generation = m.generation.wrapping_add(1);
        m.apps.clear();
        m.app_names.clear();
        m.fns.clear();
        m.triggers.clear();
    }

    /// Looks up with `hit`, else loads with `load` and stores with `put`
    /// unless an invalidation happened meanwhile.
    /// (`load` is only called on a miss: a hit allocates nothing.)
    async fn read_through<T, F>(
        &self,
        hit: impl FnOnce(&Maps) -> Option<Arc<T>>,
        load: impl FnOnce() -> F,
        put: impl FnOnce(&mut Maps, &Arc<T>),
    ) -> Result<Arc<T>>
    where
        F: Future<Output = Result<T>>,
    {
        let generation = {
            let m = self.maps.read();
            if let Some(v) = hit(&m) {
                return Ok(v);
            }
            m.generation
        };
        let v = Arc::new(load().await?);
        let mut m = self.maps.write();
        if m.generation == generation {
            put(&mut m, &v);
        }
        Ok(v)
    }

    /// An app by id, from memory after the first load.
    pub async fn cached_app(&self, app_id: &str) -> Result<Arc<App>> {
        self.read_through(
            |m| m.apps.get(app_id).cloned(),
            || self.inner.get_app(app_id),
            put_app,
        )
        .await
    }

    /// An app by name, from memory after the first load.
    pub async fn cached_app_by_name(&self, name: &str) -> Result<Arc<App>> {
        self.read_through(
            |m| m.app_names.get(name).cloned(),
            || self.inner.get_app_by_name(name),
            put_app,
        )
        .await
    }

    /// A fn by id, from memory after the first load.
    pub async fn cached_fn(&self, fn_id: &str) -> Result<Arc<Fn>> {
        self.read_through(
            |m| m.fns.get(fn_id).cloned(),
            || self.inner.get_fn(fn_id),
            |m, f| {
                m.fns.insert(f.id.clone(), f.clone());
            },
        )
        .await
    }

    /// A trigger by (app id, type, source), from memory after the first load.
    pub async fn cached_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Arc<Trigger>> {
        self.read_through(
            |m| m.triggers.get(app_id)?.get(kind)?.get(source).cloned(),
            || self.inner.get_trigger_by_source(app_id, kind, source),
            |m, t| {
                m.triggers
                    .entry(app_id.to_string())
                    .or_default()
                    .entry(kind.to_string())
                    .or_default()
                    .insert(source.to_string(), t.clone());
            },
        )
        .await
    }

    /// Runs a write, then invalidates (also when it failed: it may have
    /// half-happened as far as we know).
    async fn write<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        let r = op.await;
        self.invalidate_all();
        r
    }
}

#[async_trait]
impl<S: Datastore> Datastore for CachedStore<S> {
    async fn insert_app(&self, app: &App) -> Result<()> {
        self.write(self.inner.insert_app(app)).await
    }
    async fn update_app(&self, app: &App) -> Result<()> {
        self.write(self.inner.update_app(app)).await
    }
    async fn get_app(&self, app_id: &str) -> Result<App> {
        Ok((*self.cached_app(app_id).await?).clone())
    }
    async fn get_app_by_name(&self, name: &str) -> Result<App> {
        Ok((*self.cached_app_by_name(name).await?).clone())
    }
    async fn remove_app(&self, app_id: &str) -> Result<()> {
        self.write(self.inner.remove_app(app_id)).await
    }
    async fn list_apps(&self, filter: &AppFilter) -> Result<Vec<App>> {
        self.inner.list_apps(filter).await
    }
    async fn insert_fn(&self, f: &Fn) -> Result<()> {
        self.write(self.inner.insert_fn(f)).await
    }
    async fn update_fn(&self, f: &Fn) -> Result<()> {
        self.write(self.inner.update_fn(f)).await
    }
    async fn get_fn(&self, fn_id: &str) -> Result<Fn> {
        Ok((*self.cached_fn(fn_id).await?).clone())
    }
    async fn remove_fn(&self, fn_id: &str) -> Result<()> {
        self.write(self.inner.remove_fn(fn_id)).await
    }
    async fn list_fns(&self, filter: &FnFilter) -> Result<Vec<Fn>> {
        self.inner.list_fns(filter).await
    }
    async fn insert_trigger(&self, t: &Trigger) -> Result<()> {
        self.write(self.inner.insert_trigger(t)).await
    }
    async fn update_trigger(&self, t: &Trigger) -> Result<()> {
        self.write(self.inner.update_trigger(t)).await
    }
    async fn get_trigger(&self, trigger_id: &str) -> Result<Trigger> {
        self.inner.get_trigger(trigger_id).await
    }
    async fn get_trigger_by_source(
        &self,
        app_id: &str,
        kind: &str,
        source: &str,
    ) -> Result<Trigger> {
        Ok((*self.cached_trigger_by_source(app_id, kind, source).await?).clone())
    }
    async fn remove_trigger(&self, trigger_id: &str) -> Result<()> {
        self.write(self.inner.remove_trigger(trigger_id)).await
    }
    async fn list_triggers(&self, filter: &TriggerFilter) -> Result<Vec<Trigger>> {
        self.inner.list_triggers(filter).await
    }
    async fn put_calls(&self, calls: &[Call]) -> Result<()> {
        self.inner.put_calls(calls).await
    }
    async fn put_logs(&self, logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        self.inner.put_logs(logs).await
    }
    async fn put_records(&self, calls: &[Call], logs: &[(String, String, Vec<u8>)]) -> Result<()> {
        self.inner.put_records(calls, logs).await
    }
    fn records_behind(&self, behind: bool) {
        self.inner.records_behind(behind)
    }
    async fn get_call(&self, fn_id: &str, call_id: &str) -> Result<Call> {
        self.inner.get_call(fn_id, call_id).await
    }
    async fn list_calls(&self, filter: &CallFilter) -> Result<Vec<Call>> {
        self.inner.list_calls(filter).await
    }
    async fn get_log(&self, call_id: &str) -> Result<Vec<u8>> {
        self.inner.get_log(call_id).await
    }
    async fn prune_calls(&self, keep_per_fn: u32) -> Result<u64> {
        self.inner.prune_calls(keep_per_fn).await
    }
    async fn insert_pending(&self, call: &Call, pending: &PendingCall) -> Result<()> {
        self.inner.insert_pending(call, pending).await
    }
    async fn list_pending(&self) -> Result<Vec<PendingCall>> {
        self.inner.list_pending().await
    }
    async fn list_pending_page(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PendingSummary>> {
        self.inner.list_pending_page(after, limit).await
    }
    async fn get_pending(&self, call_id: &str) -> Result<PendingCall> {
        self.inner.get_pending(call_id).await
    }
    async fn bump_pending_attempts(&self, call_id: &str) -> Result<()> {
        self.inner.bump_pending_attempts(call_id).await
    }
    async fn remove_pending(&self, call_id: &str) -> Result<()> {
        self.inner.remove_pending(call_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use fnrs_model::{DateTime, Error, new_id};

    fn app(name: &str) -> App {
        App {
            id: new_id(),
            name: name.into(),
            config: Default::default(),
            annotations: Default::default(),
            syslog_url: None,
            shape: String::new(),
            created_at: DateTime::from_millis(1),
            updated_at: DateTime::from_millis(1),
        }
    }

    fn func(app_id: &str) -> Fn {
        Fn {
            id: new_id(),
            name: "f".into(),
            app_id: app_id.into(),
            image: "img:1".into(),
            format: None,
            memory: 128,
            timeout: 30,
            idle_timeout: 30,
            config: Default::default(),
            annotations: Default::default(),
            shape: String::new(),
            created_at: DateTime::from_millis(1),
            updated_at: DateTime::from_millis(1),
        }
    }

    fn trig(f: &Fn) -> Trigger {
        Trigger {
            id: new_id(),
            name: "t".into(),
            app_id: f.app_id.clone(),
            fn_id: f.id.clone(),
            created_at: DateTime::from_millis(1),
            updated_at: DateTime::from_millis(1),
            kind: "http".into(),
            source: "/t".into(),
            annotations: Default::default(),
        }
    }

    #[tokio::test]
    async fn hits_come_from_memory_until_a_write_through_the_cache() {
        let backing = Arc::new(MemoryStore::new());
        let cache = CachedStore::new(backing.clone());
        let a = app("a");
        let f = func(&a.id);
        let t = trig(&f);
        cache.insert_app(&a).await.unwrap();
        cache.insert_fn(&f).await.unwrap();
        cache.insert_trigger(&t).await.unwrap();

        let f1 = cache.cached_fn(&f.id).await.unwrap();
        let f2 = cache.cached_fn(&f.id).await.unwrap();
        assert!(Arc::ptr_eq(&f1, &f2), "second lookup must be a hit");
        let a1 = cache.cached_app_by_name("a").await.unwrap();
        assert!(Arc::ptr_eq(&a1, &cache.cached_app(&a.id).await.unwrap()));
        let t1 = cache
            .cached_trigger_by_source(&a.id, "http", "/t")
            .await
            .unwrap();
        assert_eq!(*t1, t);

        // A write behind the cache's back is not seen: lookups are hits.
        let mut sneaky = f.clone();
        sneaky.image = "img:sneaky".into();
        backing.update_fn(&sneaky).await.unwrap();
        assert_eq!(cache.get_fn(&f.id).await.unwrap().image, "img:1");

        // A write through the cache is seen by the next lookup.
        let mut g = f.clone();
        g.image = "img:2".into();
        cache.update_fn(&g).await.unwrap();
        assert_eq!(cache.cached_fn(&f.id).await.unwrap().image, "img:2");
        let mut b = a.clone();
        b.config.insert("K".into(), "V".into());
        cache.update_app(&b).await.unwrap();
        assert_eq!(cache.cached_app(&a.id).await.unwrap().config["K"], "V");
        assert_eq!(cache.get_app_by_name("a").await.unwrap(), b);
        let mut u = t.clone();
        u.source = "/u".into();
        cache.update_trigger(&u).await.unwrap();
        assert_eq!(
            cache
                .get_trigger_by_source(&a.id, "http", "/t")
                .await
                .unwrap_err(),
            Error::TRIGGER_NOT_FOUND
        );
        assert_eq!(
            cache
                .get_trigger_by_source(&a.id, "http", "/u")
                .await
                .unwrap(),
            u
        );
    }

    #[tokio::test]
    async fn deletes_make_lookups_404() {
        let cache = CachedStore::new(MemoryStore::new());
        let a = app("a");
        let f = func(&a.id);
        let t = trig(&f);
        cache.insert_app(&a).await.unwrap();
        cache.insert_fn(&f).await.unwrap();
        cache.insert_trigger(&t).await.unwrap();
        cache.cached_fn(&f.id).await.unwrap();
        cache.cached_app(&a.id).await.unwrap();
        cache
            .cached_trigger_by_source(&a.id, "http", "/t")
            .await
            .unwrap();

        cache.remove_trigger(&t.id).await.unwrap();
        assert_eq!(
            cache
                .cached_trigger_by_source(&a.id, "http", "/t")
                .await
                .unwrap_err(),
            Error::TRIGGER_NOT_FOUND
        );
        cache.cached_fn(&f.id).await.unwrap();
        cache.remove_fn(&f.id).await.unwrap();
        assert_eq!(
            cache.cached_fn(&f.id).await.unwrap_err(),
            Error::FN_NOT_FOUND
        );
        cache.cached_app_by_name("a").await.unwrap();
        cache.remove_app(&a.id).await.unwrap();
        assert_eq!(
            cache.cached_app(&a.id).await.unwrap_err(),
            Error::APP_NOT_FOUND
        );
        assert_eq!(
            cache.cached_app_by_name("a").await.unwrap_err(),
            Error::APP_NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_cascade_through_the_app_drops_cached_fns_and_triggers() {
        let cache = CachedStore::new(MemoryStore::new());
        let a = app("a");
        let f = func(&a.id);
        let t = trig(&f);
        cache.insert_app(&a).await.unwrap();
        cache.insert_fn(&f).await.unwrap();
        cache.insert_trigger(&t).await.unwrap();
        cache.cached_fn(&f.id).await.unwrap();
        cache
            .cached_trigger_by_source(&a.id, "http", "/t")
            .await
            .unwrap();
        cache.remove_app(&a.id).await.unwrap();
        assert_eq!(
            cache.cached_fn(&f.id).await.unwrap_err(),
            Error::FN_NOT_FOUND
        );
        assert_eq!(
            cache
                .cached_trigger_by_source(&a.id, "http", "/t")
                .await
                .unwrap_err(),
            Error::TRIGGER_NOT_FOUND
        );
    }
}
