//! Every format through `/invoke` and `/t`, with the real FDKs.

use serde_json::json;

use crate::common::{Srv, example};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fdk_plain_and_gateway() {
    let s = Srv::start().await;
    let dir = example("python-hello");
    let f = s
        .func(
            "py",
            &format!("file://{}", dir.display()),
            json!({"memory": 256}),
        )
        .await;
    s.trigger(&f, "hello", "/hello").await;

    let a = s.invoke(&f, r#"{"name":"Rust"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    let body = a.json();
    assert_eq!(body["message"], "Hello Rust");
    assert_eq!(body["call_id"], a.call_id().as_str());
    assert_eq!(body["fn_id"], f.as_str());
    assert_eq!(body["app_id"], s.app_id.as_str());
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.header("x-custom"), Some("yes"));
    assert!(
        a.header("fn-fdk-version")
            .is_some_and(|v| v.starts_with("fdk-python/")),
        "{a:?}"
    );

    // Through the trigger: the function's status and headers, unwrapped.
    let a = s
        .send(
            s.http
                .put(s.url("/t/e2e/hello?x=1"))
                .header("content-type", "application/json")
                .header("x-my-header", "foo")
                .body(r#"{"name":"Gw","status":404}"#),
        )
        .await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.header("location"), Some("/elsewhere"));
    assert_eq!(a.header("x-custom"), Some("yes"));
    assert_eq!(
        a.header("fn-fdk-version"),
        None,
        "FDK metadata is not passed on /t"
    );
    assert_eq!(a.json()["message"], "Hello Gw");
    assert_eq!(a.call_id().len(), 26);

    // An exception in the function: 502 "function failed", instance kept.
    let a = s.invoke(&f, r#"{"name":"boom"}"#).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["message"], "function failed");
    assert_eq!(a.call_id().len(), 26);
    assert_eq!(s.invoke(&f, "{}").await.status, 200);
    assert_eq!(s.instances().await, 1, "one hot instance served every call");

    // Its log line is kept with the call.
    let ok = s.invoke(&f, r#"{"name":"Logs"}"#).await;
    let log = s.log_with(&f, &ok.call_id(), "hello from func").await;
    assert!(log.contains(&ok.call_id()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_fdk_plain_and_gateway() {
    let s = Srv::start().await;
    let dir = example("node-hello");
    let f = s
        .func(
            "node",
            &format!("file://{}", dir.display()),
            json!({"memory": 256}),
        )
        .await;
    s.trigger(&f, "hello", "/node").await;

    let a = s.invoke(&f, r#"{"name":"Node"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["message"], "Hello Node");
    assert_eq!(a.json()["callID"], a.call_id().as_str());

    let a = s
        .send(
            s.http
                .post(s.url("/t/e2e/node"))
                .header("content-type", "application/json")
                .body(r#"{"name":"Gw","status":201}"#),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.header("x-custom"), Some("yes"));
    assert_eq!(a.json()["message"], "Hello Gw");

    let a = s.invoke(&f, r#"{"name":"boom"}"#).await;
    assert_eq!(
        (a.status, a.json()["message"].as_str()),
        (502, Some("function failed"))
    );
    let ok = s.invoke(&f, r#"{"name":"Logs"}"#).await;
    let log = s.log_with(&f, &ok.call_id(), "hello from func").await;
    assert!(log.contains(&ok.call_id()), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_fdk_example() {
    let s = Srv::start().await;
    let f = s
        .func(
            "rust",
            &format!("file://{}", example("rust-hello").display()),
            json!({}),
        )
        .await;
    let a = s.invoke(&f, r#"{"name":"Crab"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["message"], "Hello Crab");
    assert_eq!(a.json()["call_id"], a.call_id().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_format_is_cold_with_the_cold_env() {
    let s = Srv::start().await;
    let f = s
        .func(
            "cold",
            &format!("file://{}", example("default-sh").display()),
            json!({"format": "default"}),
        )
        .await;
    let a = s
        .send(
            s.http
                .post(s.url(&format!("/invoke/{f}?q=1")))
                .header("content-type", "text/plain")
                .header("x-custom-header", "Custom Value")
                .body("hi"),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains("input=hi"), "{}", a.body);
    assert!(
        a.body.contains(&format!("call_id={}", a.call_id())),
        "{}",
        a.body
    );
    assert!(a.body.contains("method=POST"), "{}", a.body);
    assert!(a.body.contains(&format!("/invoke/{f}?q=1")), "{}", a.body);
    assert!(
        a.body.contains("FN_HEADER_X-Custom-Header=Custom Value"),
        "{}",
        a.body
    );
    assert!(
        a.body.contains("FN_HEADER_Content-Type=text/plain"),
        "{}",
        a.body
    );
    // Cold: nothing stays running.
    assert_eq!(s.until_instances(0).await, 0);

    let a = s
        .send(s.http.post(s.url(&format!("/invoke/{f}"))).body("fail"))
        .await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["message"], "container exit code 3");
    let log = s.log_with(&f, &a.call_id(), "failing as asked").await;
    assert!(log.contains("failing as asked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_and_cloudevent_formats_are_hot() {
    let s = Srv::start().await;
    let http = s
        .func(
            "http",
            &format!("file://{}", example("http-python").display()),
            json!({"format": "http"}),
        )
        .await;
    let a = s.invoke(&http, r#"{"x":1}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    let echo = a.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["target"], format!("/invoke/{http}"));
    assert_eq!(echo["call_id"], a.call_id().as_str());
    assert_eq!(echo["body"], r#"{"x":1}"#);
    assert_eq!(a.header("x-echo-method"), Some("POST"));
    let a = s.invoke(&http, "teapot").await;
    assert_eq!(a.status, 418);

    let js = s
        .func(
            "json",
            &format!("file://{}", example("json-python").display()),
            json!({"format": "json"}),
        )
        .await;
    let a = s.invoke(&js, r#"{"name":"Json"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["message"], "Hello Json");
    assert_eq!(a.json()["call_id"], a.call_id().as_str());
    assert_eq!(a.header("x-echo-call-id"), Some(a.call_id().as_str()));
    assert_eq!(s.invoke(&js, r#"{"name":"teapot"}"#).await.status, 418);

    let ce = s
        .func(
            "ce",
            &format!("file://{}", example("cloudevent-python").display()),
            json!({"format": "cloudevent"}),
        )
        .await;
    let a = s.invoke(&ce, r#"{"name":"Event"}"#).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["message"], "Hello Event");
    assert_eq!(a.json()["received"]["eventID"], a.call_id().as_str());
    assert_eq!(a.header("x-event-id"), Some(a.call_id().as_str()));
    // A body that is not JSON cannot become a CloudEvent's data.
    let a = s.invoke(&ce, "not json").await;
    assert_eq!(a.status, 400, "{a:?}");

    // Hot: one instance each served both calls.
    assert_eq!(s.instances().await, 3);
}
