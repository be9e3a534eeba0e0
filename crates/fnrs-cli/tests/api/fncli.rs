//! The request sequences of Fn's own CLI (`fn` 0.6.63), as listed in
//! fn-cli-wire.md, with its headers and bodies, and what it needs back.

use serde_json::{Value, json};

use crate::both;
use crate::common::*;

/// Sends a request the way the Go client does.
async fn fn_req(s: &Srv, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = s
        .http
        .request(m, s.url(path))
        .header("User-Agent", "Go-http-client/1.1")
        .header("Accept", "application/json")
        .header("Accept-Encoding", "gzip");
    if method != "GET" {
        r = r.header("Content-Type", "application/json");
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let st = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        st,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

const ZERO: &str = "0001-01-01T00:00:00.000Z";

async fn fn_cli_sequences(b: Backend) {
    let s = Srv::start(b).await;
    // fn version
    let (st, v) = fn_req(&s, "GET", "/version", None).await;
    assert_eq!(st, 200);
    assert!(v["version"].is_string());

    // fn create app a2
    let (st, app) = fn_req(
        &s,
        "POST",
        "/v2/apps",
        Some(json!({"created_at": ZERO, "name": "a2", "updated_at": ZERO})),
    )
    .await;
    assert_eq!(st, 200, "{app}");
    let app_id = id(&app);

    // fn list apps: no per_page, follow cursors while next_cursor is non-empty
    let (st, l) = fn_req(&s, "GET", "/v2/apps", None).await;
    assert_eq!(st, 200);
    assert_eq!(l["items"][0]["name"], "a2");
    assert!(l.get("next_cursor").is_none_or(|c| c == ""));

    // fn create function a2 f2 IMAGE
    let (_, l) = fn_req(&s, "GET", "/v2/apps?name=a2", None).await;
    assert_eq!(id(&l["items"][0]), app_id, "the client takes items[0]");
    let (st, f) = fn_req(
        &s,
        "POST",
        "/v2/fns",
        Some(json!({"app_id": app_id, "created_at": ZERO, "image": "fnproject/hello:0.0.1", "name": "f2", "updated_at": ZERO})),
    )
    .await;
    assert_eq!(st, 200, "{f}");
    let fn_id = id(&f);
    let invoke_url = f["annotations"]["fnproject.io/fn/invokeEndpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(invoke_url, format!("{}/invoke/{fn_id}", s.server.url()));

    // fn list functions a2 / fn inspect function a2 f2
    let (st, l) = fn_req(&s, "GET", &format!("/v2/fns?app_id={app_id}"), None).await;
    assert_eq!((st, l["items"].as_array().unwrap().len()), (200, 1));
    let (_, l) = fn_req(&s, "GET", &format!("/v2/fns?app_id={app_id}&name=f2"), None).await;
    assert_eq!(id(&l["items"][0]), fn_id);
    assert_eq!(
        l["items"][0]["annotations"]["fnproject.io/fn/invokeEndpoint"],
        invoke_url
    );

    // fn create trigger a2 f2 t2 --type http --source /t2
    let (st, t) = fn_req(
        &s,
        "POST",
        "/v2/triggers",
        Some(json!({"app_id": app_id, "created_at": ZERO, "fn_id": fn_id, "name": "t2", "source": "/t2", "type": "http", "updated_at": ZERO})),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        t["annotations"]["fnproject.io/trigger/httpEndpoint"],
        format!("{}/t/a2/t2", s.server.url())
    );

    // fn list triggers a2: then GET /v2/fns/{fn_id} per trigger
    let (_, l) = fn_req(&s, "GET", &format!("/v2/triggers?app_id={app_id}"), None).await;
    let tfn = l["items"][0]["fn_id"].as_str().unwrap().to_owned();
    let (st, f_again) = fn_req(&s, "GET", &format!("/v2/fns/{tfn}"), None).await;
    assert_eq!((st, f_again["name"].as_str()), (200, Some("f2")));

    // fn update function a2 f2 --memory 256: the whole object echoed back
    let mut echo = f.clone();
    echo["memory"] = json!(256);
    let (st, upd) = fn_req(&s, "PUT", &format!("/v2/fns/{fn_id}"), Some(echo)).await;
    assert_eq!(st, 200, "{upd}");
    assert_eq!(upd["memory"], 256);
    assert_eq!(upd["created_at"], f["created_at"]);

    // fn update app: the whole app object
    let mut app_echo = app.clone();
    app_echo["config"] = json!({"LOG": "debug"});
    let (st, a_upd) = fn_req(&s, "PUT", &format!("/v2/apps/{app_id}"), Some(app_echo)).await;
    assert_eq!(st, 200, "{a_upd}");
    assert_eq!(a_upd["config"], json!({"LOG": "debug"}));

    // fn delete trigger a2 f2 t2
    let (_, l) = fn_req(
        &s,
        "GET",
        &format!("/v2/triggers?app_id={app_id}&fn_id={fn_id}&name=t2"),
        None,
    )
    .await;
    let tid = id(&l["items"][0]);
    let (st, body) = fn_req(&s, "DELETE", &format!("/v2/triggers/{tid}"), None).await;
    assert_eq!((st, body), (204, Value::Null));

    // fn delete function / app: exactly 204
    let (st, _) = fn_req(&s, "DELETE", &format!("/v2/fns/{fn_id}"), None).await;
    assert_eq!(st, 204);
    let (st, _) = fn_req(&s, "DELETE", &format!("/v2/apps/{app_id}"), None).await;
    assert_eq!(st, 204);

    // Errors are {"message"} (the client prints "Fn: <message>").
    let (st, e) = fn_req(&s, "GET", &format!("/v2/fns/{fn_id}"), None).await;
    assert_eq!((st, e), (404, json!({"message": "Fn not found"})));
}

async fn fn_cli_lists_follow_cursors(b: Backend) {
    let s = Srv::start(b).await;
    for i in 0..65 {
        s.app(&format!("app{i:02}")).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v2/apps".to_owned();
    for _ in 0..10 {
        let (st, l) = fn_req(&s, "GET", &path, None).await;
        assert_eq!(st, 200);
        for i in l["items"].as_array().unwrap() {
            seen.push(i["name"].as_str().unwrap().to_owned());
        }
        match l.get("next_cursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => path = format!("/v2/apps?cursor={c}"),
            _ => break,
        }
    }
    let want: Vec<String> = (0..65).map(|i| format!("app{i:02}")).collect();
    assert_eq!(seen, want);
}

both!(fn_cli_sequences, fn_cli_lists_follow_cursors);
