//! Contract §4.1: common conventions.

use fnrs_testkit::server::ServerOptions;
use serde_json::json;

use crate::both;
use crate::common::*;

async fn root_and_version(b: Backend) {
    let s = Srv::start(b).await;
    let r = s.raw("GET", "/", "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"goto":"https://github.com/fnproject/fn","hello":"world!"}"#
    );
    let r = s.raw("GET", "/version", "").await;
    assert_eq!(r.text().await.unwrap(), r#"{"version":"0.3.753"}"#);
}

async fn unknown_path_is_404(b: Backend) {
    let s = Srv::start(b).await;
    let r = s.raw("GET", "/v2/nothing%20here", "").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        r.text().await.unwrap(),
        "{\"message\":\"Path not found: GET /v2/nothing here\"}\n"
    );
    err(
        s.post("/v3/apps", json!({})).await,
        404,
        "Path not found: POST /v3/apps",
    );
}

async fn wrong_method_is_405(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.delete("/v2/apps").await,
        405,
        "Method not allowed: DELETE /v2/apps",
    );
    err(
        s.post("/v2/fns/xyz", json!({})).await,
        405,
        "Method not allowed: POST /v2/fns/xyz",
    );
    err(
        s.get("/invoke/xyz").await,
        405,
        "Method not allowed: GET /invoke/xyz",
    );
}

async fn invalid_json_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f, t) = s.app_fn_trigger().await;
    let cases = [
        ("POST", "/v2/apps".to_owned(), "{"),
        ("POST", "/v2/apps".to_owned(), ""),
        ("POST", "/v2/apps".to_owned(), r#"{"name": 5}"#),
        (
            "POST",
            "/v2/apps".to_owned(),
            r#"{"name":"x","config":{"a":1}}"#,
        ),
        (
            "POST",
            "/v2/apps".to_owned(),
            r#"{"name":"x","created_at":"yesterday"}"#,
        ),
        ("PUT", format!("/v2/apps/{a}"), "[1,2]"),
        ("POST", "/v2/fns".to_owned(), r#"{"memory": -1}"#),
        ("POST", "/v2/fns".to_owned(), r#"{"timeout": 1.5}"#),
        ("PUT", format!("/v2/fns/{f}"), r#"{"timeout": 99999999999}"#),
        ("POST", "/v2/triggers".to_owned(), "not json"),
        ("PUT", format!("/v2/triggers/{t}"), r#"{"name": ["x"]}"#),
    ];
    for (m, p, body) in cases {
        let r = s.raw(m, &p, body).await;
        assert_eq!(r.status(), 400, "{m} {p} {body}");
        assert_eq!(
            r.text().await.unwrap(),
            "{\"message\":\"Invalid JSON\"}\n",
            "{m} {p} {body}"
        );
    }
}

async fn body_over_max_request_size_is_413(b: Backend) {
    let s = Srv::start_with(b, ServerOptions::default().env("FN_MAX_REQUEST_SIZE", "64")).await;
    let big = format!(r#"{{"name":"a","config":{{"k":"{}"}}}}"#, "x".repeat(100));
    let r = s.raw("POST", "/v2/apps", &big).await;
    assert_eq!(r.status(), 413);
    let want = format!(
        "{{\"message\":\"Content-Length too large for this server, {} \\u003e max 64\"}}\n",
        big.len()
    );
    assert_eq!(r.text().await.unwrap(), want);
    // Without a Content-Length (chunked), the body is cut at the limit.
    let stream = futures_body(big.clone());
    let r = s
        .http
        .post(s.url("/v2/apps"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"message\":\"Request content too large\"}\n"
    );
    // Small bodies pass.
    assert_eq!(s.post("/v2/apps", json!({"name": "ok"})).await.0, 200);
}

fn futures_body(s: String) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        s.into_bytes().chunks(16).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks)
}

async fn ids_and_timestamps(b: Backend) {
    let s = Srv::start(b).await;
    let mut prev = String::new();
    for i in 0..5 {
        let app = s.app(&format!("app{i}")).await;
        let id = id(&app);
        assert_eq!(id.len(), 26);
        assert!(
            id.chars()
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c))
        );
        assert!(id > prev, "ids sort by creation time");
        prev = id;
        for k in ["created_at", "updated_at"] {
            let t = app[k].as_str().unwrap();
            // 2019-04-11T08:42:42.836Z
            assert_eq!(t.len(), 24, "{t}");
            assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
        }
        assert_eq!(app["created_at"], app["updated_at"]);
    }
}

async fn health_and_metrics(b: Backend) {
    let s = Srv::start(b).await;
    let (st, v) = s.get("/health").await;
    assert_eq!(st, 200);
    assert_eq!(v["status"], "ok");
    assert!(v.get("invoker").is_some());
    s.app("a").await;
    s.get("/v2/apps/NOPE").await;
    let r = s.raw("GET", "/metrics", "").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let line = |route: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("fnrs_api_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(line("/v2/apps", "200"), "{text}");
    assert!(line("/v2/apps/{app_id}", "404"), "{text}");
    assert!(
        text.contains("fnrs_api_request_duration_seconds_bucket"),
        "histograms have buckets: {text}"
    );
}

async fn cors_only_when_configured(b: Backend) {
    let s = Srv::start(b).await;
    let r = s
        .http
        .get(s.url("/v2/apps"))
        .header("Origin", "http://ui.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let s = Srv::start_with(
        b,
        ServerOptions::default()
            .env("FN_API_CORS_ORIGINS", "http://ui.example")
            .env("FN_API_CORS_HEADERS", "X-Token"),
    )
    .await;
    let r = s
        .http
        .get(s.url("/v2/apps"))
        .header("Origin", "http://ui.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://ui.example"
    );
    let r = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/v2/apps"))
        .header("Origin", "http://ui.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-token")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://ui.example"
    );
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let r = s
        .http
        .get(s.url("/v2/apps"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

async fn invoke_and_trigger_lookups(b: Backend) {
    let s = Srv::start(b).await;
    s.app_fn_trigger().await;
    err(s.post("/invoke/NOPE", json!({})).await, 404, "Fn not found");
    err(s.get("/t/nope/t").await, 404, "App not found");
    err(s.get("/t/a/other").await, 404, "Trigger not found");
    err(s.get("/t/a").await, 404, "Trigger not found");
}

async fn sigterm_stops_the_server_cleanly(b: Backend) {
    let mut s = Srv::start(b).await;
    s.app("a").await;
    let status = s.server.stop().expect("exits by itself after SIGTERM");
    assert!(status.success(), "{status:?}");
    // The data is still there after a clean stop.
    s.server.restart().await.unwrap();
    let (st, v) = s.get("/v2/apps?name=a").await;
    assert_eq!((st, v["items"].as_array().unwrap().len()), (200, 1));
}

async fn settings_from_name_file_variables(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let lb = dir.path().join("lb");
    std::fs::write(&lb, "https://lb.example\n").unwrap();
    let max = dir.path().join("max");
    std::fs::write(&max, "300").unwrap();
    let s = Srv::start_with(
        b,
        ServerOptions::default()
            .env("FN_PUBLIC_LB_URL_FILE", lb.to_str().unwrap())
            .env("FN_MAX_REQUEST_SIZE_FILE", max.to_str().unwrap()),
    )
    .await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    assert_eq!(
        f["annotations"]["fnproject.io/fn/invokeEndpoint"],
        format!("https://lb.example/invoke/{}", id(&f))
    );
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(400));
    assert_eq!(s.raw("POST", "/v2/apps", &big).await.status(), 413);
}

async fn json_bodies_over_16_mib_are_413(b: Backend) {
    let s = Srv::start(b).await;
    let big = format!(
        r#"{{"name":"a","config":{{"k":"{}"}}}}"#,
        "x".repeat(16 << 20)
    );
    let r = s.raw("POST", "/v2/apps", &big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"message\":\"Request content too large\"}\n"
    );
    assert_eq!(s.get("/v2/apps").await.1, json!({"items": []}));
}

both!(
    json_bodies_over_16_mib_are_413,
    settings_from_name_file_variables,
    sigterm_stops_the_server_cleanly,
    root_and_version,
    unknown_path_is_404,
    wrong_method_is_405,
    invalid_json_is_400,
    body_over_max_request_size_is_413,
    ids_and_timestamps,
    health_and_metrics,
    cors_only_when_configured,
    invoke_and_trigger_lookups,
);
