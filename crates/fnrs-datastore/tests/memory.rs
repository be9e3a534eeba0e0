//! The conformance suite against the in-memory store.

use std::sync::Arc;

use fnrs_datastore::{MemoryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_memory_store_conforms() {
    conformance::run_all(Arc::new(fnrs_datastore::CachedStore::new(
        MemoryStore::new(),
    )))
    .await;
}
