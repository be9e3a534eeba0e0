//! Contract §4.2: triggers.

use serde_json::{Value, json};

use crate::both;
use crate::common::*;

fn body(a: &str, f: &str, extra: Value) -> Value {
    let mut b = json!({"app_id": a, "fn_id": f, "name": "t2", "type": "http", "source": "/t2"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v.clone();
        }
    }
    b
}

async fn setup(s: &Srv) -> (String, String) {
    let a = id(&s.app("a").await);
    let f = id(&s.func(&a, "f").await);
    (a, f)
}

async fn trigger_create_returns_annotated_trigger(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let (st, t) = s
        .post("/v2/triggers", body(&a, &f, json!({"created_at": "0001-01-01T00:00:00.000Z", "updated_at": "0001-01-01T00:00:00.000Z"})))
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        (t["name"].as_str(), t["type"].as_str(), t["source"].as_str()),
        (Some("t2"), Some("http"), Some("/t2"))
    );
    assert_eq!(
        (t["app_id"].as_str(), t["fn_id"].as_str()),
        (Some(a.as_str()), Some(f.as_str()))
    );
    assert_eq!(
        t["annotations"]["fnproject.io/trigger/httpEndpoint"],
        format!("http://{}/t/a/t2", s.server.addr())
    );
    let root = s.trigger(&a, &f, "root", "/").await;
    assert_eq!(
        root["annotations"]["fnproject.io/trigger/httpEndpoint"],
        format!("http://{}/t/a/", s.server.addr())
    );
}

async fn trigger_id_on_create_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"id": "X"})))
            .await,
        400,
        "ID cannot be provided for Trigger creation",
    );
}

async fn trigger_created_at_on_create_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post(
            "/v2/triggers",
            body(&a, &f, json!({"created_at": "2019-04-11T08:42:42.836Z"})),
        )
        .await,
        400,
        "Trigger Created At Provided for Create",
    );
}

async fn trigger_updated_at_on_create_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post(
            "/v2/triggers",
            body(&a, &f, json!({"updated_at": "2019-04-11T08:42:42Z"})),
        )
        .await,
        400,
        "Trigger ID Provided for Create",
    );
}

async fn trigger_missing_app_id_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"app_id": null})))
            .await,
        400,
        "Missing App ID on Trigger",
    );
}

async fn trigger_missing_name_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"name": null})))
            .await,
        400,
        "Missing name on Trigger",
    );
}

async fn trigger_name_over_255_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post(
            "/v2/triggers",
            body(&a, &f, json!({"name": "t".repeat(256)})),
        )
        .await,
        400,
        "Trigger name must be 255 characters or less",
    );
    assert_eq!(
        s.post(
            "/v2/triggers",
            body(&a, &f, json!({"name": "t".repeat(255)}))
        )
        .await
        .0,
        200
    );
}

async fn trigger_invalid_name_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    for name in ["a b", "a/b", "a.b"] {
        err(
            s.post("/v2/triggers", body(&a, &f, json!({ "name": name })))
                .await,
            400,
            "Invalid name for Trigger",
        );
    }
}

async fn trigger_missing_fn_id_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"fn_id": null})))
            .await,
        400,
        "Missing Fn ID on Trigger",
    );
}

async fn trigger_type_must_be_http(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"type": "cron"})))
            .await,
        400,
        "Trigger Type Not Supported",
    );
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"type": null})))
            .await,
        400,
        "Trigger Type Not Supported",
    );
}

async fn trigger_missing_source_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"source": null})))
            .await,
        400,
        "Missing Trigger Source",
    );
}

async fn trigger_source_needs_leading_slash(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body(&a, &f, json!({"source": "t2"})))
            .await,
        400,
        "Missing Trigger Source Prefix '/'",
    );
}

async fn trigger_app_and_fn_must_exist_and_agree(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    err(
        s.post("/v2/triggers", body("NOAPP", &f, json!({}))).await,
        404,
        "App not found",
    );
    err(
        s.post("/v2/triggers", body(&a, "NOFN", json!({}))).await,
        404,
        "Fn not found",
    );
    let other = id(&s.app("other").await);
    err(
        s.post("/v2/triggers", body(&other, &f, json!({}))).await,
        400,
        "Invalid Fn ID - not owned by specified app",
    );
}

async fn trigger_same_source_is_409(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    s.trigger(&a, &f, "t1", "/same").await;
    let f2 = id(&s.func(&a, "f2").await);
    err(
        s.post(
            "/v2/triggers",
            body(&a, &f2, json!({"name": "t2", "source": "/same"})),
        )
        .await,
        409,
        "Trigger with the same type and source exists on this app",
    );
}

async fn trigger_same_name_is_409(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    s.trigger(&a, &f, "t1", "/one").await;
    err(
        s.post(
            "/v2/triggers",
            body(&a, &f, json!({"name": "t1", "source": "/two"})),
        )
        .await,
        409,
        "Trigger already exists",
    );
}

async fn trigger_get_and_list(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let f2 = id(&s.func(&a, "g").await);
    let t1 = s.trigger(&a, &f, "t1", "/one").await;
    s.trigger(&a, &f2, "t2", "/two").await;
    let (st, got) = s.get(&format!("/v2/triggers/{}", id(&t1))).await;
    assert_eq!(st, 200);
    assert_eq!(got, t1);
    err(s.get("/v2/triggers/NOPE").await, 404, "Trigger not found");
    err(
        s.get("/v2/triggers").await,
        400,
        "Missing App ID on Trigger",
    );
    let (_, l) = s.get(&format!("/v2/triggers?app_id={a}")).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    assert_eq!(l["items"][0], t1);
    let (_, l) = s.get(&format!("/v2/triggers?app_id={a}&fn_id={f2}")).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_eq!(l["items"][0]["name"], "t2");
    let (_, l) = s.get(&format!("/v2/triggers?app_id={a}&name=t1")).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_eq!(l["items"][0]["name"], "t1");
    let (_, l) = s.get("/v2/triggers?app_id=NOAPP").await;
    assert_eq!(l, json!({"items": []}));
}

async fn trigger_update_merges_and_is_not_annotated(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let (_, t) = s
        .post(
            "/v2/triggers",
            body(&a, &f, json!({"annotations": {"x": 1}})),
        )
        .await;
    let path = format!("/v2/triggers/{}", id(&t));
    let (st, v) = s
        .put(
            &path,
            json!({"name": "renamed", "source": "/new", "annotations": {"x": null, "y": 2},
                           "app_id": "IGNORED", "type": "ignored"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["source"].as_str()),
        (Some("renamed"), Some("/new"))
    );
    assert_eq!(
        (v["app_id"].as_str(), v["type"].as_str()),
        (Some(a.as_str()), Some("http"))
    );
    assert_eq!(v["annotations"], json!({"y": 2}));
    let (_, got) = s.get(&path).await;
    assert_eq!(got["source"], "/new");
    // Moving the trigger to another fn of the app works; a fn of another app does not.
    let g = id(&s.func(&a, "g").await);
    let (st, v) = s.put(&path, json!({"fn_id": g})).await;
    assert_eq!((st, v["fn_id"].as_str()), (200, Some(g.as_str())));
    let other = id(&s.app("other").await);
    let h = id(&s.func(&other, "h").await);
    err(
        s.put(&path, json!({"fn_id": h})).await,
        400,
        "Invalid Fn ID - not owned by specified app",
    );
    err(
        s.put(&path, json!({"source": "nope"})).await,
        400,
        "Missing Trigger Source Prefix '/'",
    );
}

async fn trigger_update_id_mismatch_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let t = s.trigger(&a, &f, "t1", "/one").await;
    let path = format!("/v2/triggers/{}", id(&t));
    err(
        s.put(&path, json!({"id": "OTHER", "source": "/x"})).await,
        400,
        "ID in path does not match ID in body",
    );
    assert_eq!(s.get(&path).await.1["source"], "/one");
    err(
        s.put("/v2/triggers/NOPE", json!({})).await,
        404,
        "Trigger not found",
    );
}

async fn trigger_update_conflicts_are_409(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    s.trigger(&a, &f, "t1", "/one").await;
    let t2 = s.trigger(&a, &f, "t2", "/two").await;
    let path = format!("/v2/triggers/{}", id(&t2));
    err(
        s.put(&path, json!({"source": "/one"})).await,
        409,
        "Trigger with the same type and source exists on this app",
    );
    err(
        s.put(&path, json!({"name": "t1"})).await,
        409,
        "Trigger already exists",
    );
}

async fn trigger_update_accepts_the_whole_object_echoed(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let t = s.trigger(&a, &f, "t1", "/one").await;
    let mut echo = t.clone();
    echo["source"] = json!("/changed");
    let (st, v) = s.put(&format!("/v2/triggers/{}", id(&t)), echo).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["source"], "/changed");
    assert!(v.get("annotations").is_none(), "{v}");
}

async fn trigger_delete_is_204(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let t = s.trigger(&a, &f, "t1", "/one").await;
    let path = format!("/v2/triggers/{}", id(&t));
    assert_eq!(s.delete(&path).await, (204, Value::Null));
    err(s.get(&path).await, 404, "Trigger not found");
    err(s.delete(&path).await, 404, "Trigger not found");
}

/// A source is matched against the request's decoded path: one holding a
/// query or fragment mark, a percent sign or a control character can never
/// be reached through its httpEndpoint URL.
async fn trigger_source_must_be_reachable(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f) = setup(&s).await;
    let message =
        "Invalid Trigger Source, sources may not contain '?', '#', '%' or control characters";
    for source in [
        "/a?b", "/a#b", "/a%2Fb", "/a%", "/a\u{0}", "/a\nb", "/a\u{7f}",
    ] {
        err(
            s.post("/v2/triggers", body(&a, &f, json!({ "source": source })))
                .await,
            400,
            message,
        );
    }
    let (st, t) = s
        .post("/v2/triggers", body(&a, &f, json!({"source": "/a b/é"})))
        .await;
    assert_eq!(st, 200, "{t}");
    let path = format!("/v2/triggers/{}", id(&t));
    err(s.put(&path, json!({"source": "/x?y"})).await, 400, message);
    assert_eq!(s.get(&path).await.1["source"], "/a b/é");
}

both!(
    trigger_source_must_be_reachable,
    trigger_create_returns_annotated_trigger,
    trigger_id_on_create_is_400,
    trigger_created_at_on_create_is_400,
    trigger_updated_at_on_create_is_400,
    trigger_missing_app_id_is_400,
    trigger_missing_name_is_400,
    trigger_name_over_255_is_400,
    trigger_invalid_name_is_400,
    trigger_missing_fn_id_is_400,
    trigger_type_must_be_http,
    trigger_missing_source_is_400,
    trigger_source_needs_leading_slash,
    trigger_app_and_fn_must_exist_and_agree,
    trigger_same_source_is_409,
    trigger_same_name_is_409,
    trigger_get_and_list,
    trigger_update_merges_and_is_not_annotated,
    trigger_update_id_mismatch_is_400,
    trigger_update_conflicts_are_409,
    trigger_update_accepts_the_whole_object_echoed,
    trigger_delete_is_204,
);
