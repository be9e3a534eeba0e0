//! Micro-benchmarks of pieces on fnrs's hot path, through public APIs:
//! gateway header wrapping and unwrapping (trigger calls), id generation
//! (one per call), and the read cache's fn and trigger lookups.
//!
//! `cargo bench -p fnrs-bench --bench hot_path`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fnrs_datastore::{CachedStore, Datastore, MemoryStore};
use fnrs_model::{App, Fn, IdGenerator, Trigger};
use http::{HeaderMap, HeaderValue, Method};

fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:8080"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
        ("content-length", "17"),
        ("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn function_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("fn-http-status", "200"),
        ("fn-http-h-x-custom", "yes"),
        ("fn-http-h-location", "/elsewhere"),
        ("fn-fdk-version", "fdk-rust/0.1.0"),
        ("date", "Wed, 25 Nov 2026 21:56:54 GMT"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn protocol(c: &mut Criterion) {
    let req = client_headers();
    c.bench_function("wrap_gateway_request (6 headers)", |b| {
        b.iter(|| {
            fnrs_protocol::wrap_gateway_request(
                black_box(req.clone()),
                &Method::POST,
                "http://127.0.0.1:8080/t/bench/hot",
            )
        })
    });
    let resp = function_headers();
    c.bench_function("unwrap_gateway_response (6 headers)", |b| {
        b.iter(|| fnrs_protocol::unwrap_gateway_response(black_box(&resp)))
    });
}

fn ids(c: &mut Criterion) {
    let g = IdGenerator::new(0x1234_5678_9abc);
    c.bench_function("IdGenerator::next_id", |b| {
        b.iter(|| black_box(g.next_id()))
    });
}

fn model<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid model json")
}

fn cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = "2026-11-25T21:00:00.000Z";
    let app: App = model(serde_json::json!({
        "id": "01JAPP00000000000000000000", "name": "bench",
        "created_at": now, "updated_at": now,
    }));
    let func: Fn = model(serde_json::json!({
        "id": "01JFN000000000000000000000", "name": "hot", "app_id": app.id,
        "image": "file:///tmp/hot", "memory": 128, "timeout": 30, "idle_timeout": 30,
        "created_at": now, "updated_at": now,
    }));
    let trig: Trigger = model(serde_json::json!({
        "id": "01JTRIG0000000000000000000", "name": "hot", "app_id": app.id,
        "fn_id": func.id, "type": "http", "source": "/hot",
        "created_at": now, "updated_at": now,
    }));
    let store = CachedStore::new(MemoryStore::new());
    rt.block_on(async {
        store.insert_app(&app).await.expect("app");
        store.insert_fn(&func).await.expect("fn");
        store.insert_trigger(&trig).await.expect("trigger");
        // Fill the cache.
        store.cached_fn(&func.id).await.expect("fn");
        store.cached_app_by_name("bench").await.expect("app");
        store
            .cached_trigger_by_source(&app.id, "http", "/hot")
            .await
            .expect("trigger");
    });
    c.bench_function("CachedStore::cached_fn (hit)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.cached_fn(black_box(&func.id)).await) })
    });
    c.bench_function("CachedStore::cached_app_by_name (hit)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.cached_app_by_name(black_box("bench")).await) })
    });
    c.bench_function("CachedStore::cached_trigger_by_source (hit)", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                store
                    .cached_trigger_by_source(&app.id, "http", black_box("/hot"))
                    .await,
            )
        })
    });
}

criterion_group!(benches, protocol, ids, cache);
criterion_main!(benches);
