//! Contract §4.3: pagination.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::both;
use crate::common::*;

fn names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn apps_page_by_name_with_cursor(b: Backend) {
    let s = Srv::start(b).await;
    // Created out of order; listed by name.
    for n in ["c", "a", "e", "b", "d"] {
        s.app(n).await;
    }
    let (_, p1) = s.get("/v2/apps?per_page=2").await;
    assert_eq!(names(&p1), ["a", "b"]);
    let c1 = p1["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(c1, URL_SAFE_NO_PAD.encode("b"));
    let (_, p2) = s.get(&format!("/v2/apps?per_page=2&cursor={c1}")).await;
    assert_eq!(names(&p2), ["c", "d"]);
    let c2 = p2["next_cursor"].as_str().unwrap().to_owned();
    let (_, p3) = s.get(&format!("/v2/apps?per_page=2&cursor={c2}")).await;
    assert_eq!(names(&p3), ["e"]);
    assert!(
        p3.get("next_cursor").is_none(),
        "a short page has no cursor: {p3}"
    );
    // A last full page still yields a cursor, to an empty page.
    let (_, full) = s.get("/v2/apps?per_page=5").await;
    let c = full["next_cursor"].as_str().unwrap().to_owned();
    let (_, empty) = s.get(&format!("/v2/apps?per_page=5&cursor={c}")).await;
    assert_eq!(empty, serde_json::json!({"items": []}));
}

async fn per_page_defaults_to_30_and_caps_at_100(b: Backend) {
    let s = Srv::start(b).await;
    for i in 0..101 {
        s.app(&format!("app{i:03}")).await;
    }
    for (q, n) in [
        ("", 30),
        ("?per_page=0", 30),
        ("?per_page=-3", 30),
        ("?per_page=abc", 30),
        ("?per_page=7", 7),
        ("?per_page=100", 100),
        ("?per_page=1000", 100),
    ] {
        let (st, v) = s.get(&format!("/v2/apps{q}")).await;
        assert_eq!(st, 200);
        assert_eq!(v["items"].as_array().unwrap().len(), n, "{q}");
    }
}

async fn bad_cursor_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(s.get("/v2/apps?cursor=***").await, 400, "Invalid cursor");
    let a = id(&s.app("a").await);
    err(
        s.get(&format!("/v2/fns?app_id={a}&cursor=%25%25")).await,
        400,
        "Invalid cursor",
    );
    err(
        s.get(&format!("/v2/triggers?app_id={a}&cursor=!")).await,
        400,
        "Invalid cursor",
    );
}

async fn name_filters_are_exact(b: Backend) {
    let s = Srv::start(b).await;
    for n in ["a", "ab", "b"] {
        s.app(n).await;
    }
    let (_, v) = s.get("/v2/apps?name=a").await;
    assert_eq!(names(&v), ["a"]);
    let (_, v) = s.get("/v2/apps?name=zz").await;
    assert_eq!(v, serde_json::json!({"items": []}));
    let a = id(&s.app("fa").await);
    for n in ["f1", "f2", "f10"] {
        s.func(&a, n).await;
    }
    let (_, v) = s.get(&format!("/v2/fns?app_id={a}&name=f1")).await;
    assert_eq!(names(&v), ["f1"]);
    let (_, v) = s.get(&format!("/v2/fns?app_id={a}")).await;
    assert_eq!(names(&v), ["f1", "f10", "f2"]);
}

async fn fns_and_triggers_page_too(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    for n in ["f3", "f1", "f2"] {
        let f = id(&s.func(&a, n).await);
        s.trigger(&a, &f, &format!("t{n}"), &format!("/{n}")).await;
    }
    let (_, v) = s.get(&format!("/v2/fns?app_id={a}&per_page=2")).await;
    assert_eq!(names(&v), ["f1", "f2"]);
    let c = v["next_cursor"].as_str().unwrap();
    let (_, v) = s
        .get(&format!("/v2/fns?app_id={a}&per_page=2&cursor={c}"))
        .await;
    assert_eq!(names(&v), ["f3"]);
    let (_, v) = s.get(&format!("/v2/triggers?app_id={a}&per_page=2")).await;
    assert_eq!(names(&v), ["tf1", "tf2"]);
    let c = v["next_cursor"].as_str().unwrap();
    let (_, v) = s
        .get(&format!("/v2/triggers?app_id={a}&per_page=2&cursor={c}"))
        .await;
    assert_eq!(names(&v), ["tf3"]);
}

/// A URI too long for the server gets Fn's error shape, not an empty body.
async fn overlong_uris_are_414_with_a_message(b: Backend) {
    let s = Srv::start(b).await;
    // Over hyper's own limit (64 KiB), which no client library would send.
    let req = format!(
        "GET /v2/apps?cursor={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "A".repeat(100 << 10)
    );
    let answer = raw_exchange(s.server.addr(), req.as_bytes()).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json; charset=utf-8"),
        "{head}"
    );
    assert_eq!(body, "{\"message\":\"URI too long\"}\n");
    // Below the limit the handler answers.
    err(
        s.get(&format!("/v2/apps?cursor={}", "*".repeat(60 << 10)))
            .await,
        400,
        "Invalid cursor",
    );
    assert_eq!(s.get("/v2/apps").await.0, 200);
}

both!(
    overlong_uris_are_414_with_a_message,
    apps_page_by_name_with_cursor,
    per_page_defaults_to_30_and_caps_at_100,
    bad_cursor_is_400,
    name_filters_are_exact,
    fns_and_triggers_page_too,
);
