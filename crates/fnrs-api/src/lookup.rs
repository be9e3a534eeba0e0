//! Read-only lookups on the invoke path, answered from memory by a cache.

use std::sync::Arc;

use async_trait::async_trait;
use fnrs_datastore::Datastore;
use fnrs_model::{App, Error, Fn, Trigger};

/// The lookups `/invoke` and `/t` need, as shared values (no copy per call).
#[async_trait]
pub trait Lookup: Send + Sync + 'static {
    /// App by id; 404 "App not found".
    async fn app(&self, app_id: &str) -> Result<Arc<App>, Error>;
    /// App by name; 404 "App not found".
    async fn app_by_name(&self, name: &str) -> Result<Arc<App>, Error>;
    /// Fn by id; 404 "Fn not found".
    async fn func(&self, fn_id: &str) -> Result<Arc<Fn>, Error>;
    /// HTTP trigger of an app by source; 404 "Trigger not found".
    async fn http_trigger(&self, app_id: &str, source: &str) -> Result<Arc<Trigger>, Error>;
}

/// Lookups straight from a store (no cache): for tests and as a fallback.
pub struct StoreLookup(pub Arc<dyn Datastore>);

#[async_trait]
impl Lookup for StoreLookup {
    async fn app(&self, app_id: &str) -> Result<Arc<App>, Error> {
        self.0.get_app(app_id).await.map(Arc::new)
    }
    async fn app_by_name(&self, name: &str) -> Result<Arc<App>, Error> {
        self.0.get_app_by_name(name).await.map(Arc::new)
    }
    async fn func(&self, fn_id: &str) -> Result<Arc<Fn>, Error> {
        self.0.get_fn(fn_id).await.map(Arc::new)
    }
    async fn http_trigger(&self, app_id: &str, source: &str) -> Result<Arc<Trigger>, Error> {
        self.0
            .get_trigger_by_source(app_id, "http", source)
            .await
            .map(Arc::new)
    }
}
