//! What the handlers share: the store, the lookups, the invoker and config.

use std::sync::Arc;

use fnrs_datastore::Datastore;
use fnrs_model::IdGenerator;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::BearerToken;
use crate::invoke::Invoker;
use crate::lookup::Lookup;

/// The version `/version` reports: the Fn server version whose API fnrs serves.
pub const FN_API_VERSION: &str = "0.3.753";

/// Settings of the API (parsed once by the binary).
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Base URL for the invoke and trigger endpoint annotations
    /// (`FN_PUBLIC_LB_URL`); `None` means `http://<Host header>`.
    pub public_lb_url: Option<String>,
    /// Largest request body in bytes (`FN_MAX_REQUEST_SIZE`); 0 = no limit.
    pub max_request_size: u64,
    /// Origins allowed by CORS (`FN_API_CORS_ORIGINS`; `*` = any); empty = no CORS.
    pub cors_origins: Vec<String>,
    /// Request headers allowed by CORS (`FN_API_CORS_HEADERS`).
    pub cors_headers: Vec<String>,
    /// The token every request but `/`, `/version` and `/health` needs
    /// (`FN_API_TOKEN`); also accepted for calls to apps with an invoke token.
    pub api_token: Option<BearerToken>,
}

/// Shared state of every handler.
pub struct ApiState {
    /// The store of the management API (writes go through the cache, if any,
    /// so that it never serves stale lookups).
    pub store: Arc<dyn Datastore>,
    /// Lookups of the invoke path (from memory).
    pub lookup: Arc<dyn Lookup>,
    /// Runs calls.
    pub invoker: Arc<dyn Invoker>,
    /// Settings.
    pub config: ApiConfig,
    /// Makes the ids of new apps, fns and triggers.
    pub ids: Arc<IdGenerator>,
    /// Renders `/metrics`; `None` serves an empty page.
    pub metrics: Option<PrometheusHandle>,
}
