//! Contract §4.2: fns.

use fnrs_testkit::server::ServerOptions;
use serde_json::{Value, json};

use crate::both;
use crate::common::*;

fn body(app_id: &str, extra: Value) -> Value {
    let mut b = json!({"app_id": app_id, "name": "f", "image": "fnproject/hello"});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

async fn fn_create_applies_defaults_and_annotates(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let (st, f) = s.post("/v2/fns", body(&a, json!({}))).await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(
        (
            f["memory"].as_u64(),
            f["timeout"].as_i64(),
            f["idle_timeout"].as_i64()
        ),
        (Some(128), Some(30), Some(30))
    );
    assert_eq!(f["config"], json!({}));
    assert_eq!(f["app_id"], a);
    assert_eq!(f["image"], "fnproject/hello");
    assert!(f.get("format").is_none());
    let want = format!("http://{}/invoke/{}", s.server.addr(), id(&f));
    assert_eq!(f["annotations"]["fnproject.io/fn/invokeEndpoint"], want);
}

async fn fn_create_counts_zero_timestamps_as_absent(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let (st, f) = s
        .post("/v2/fns", body(&a, json!({"created_at": "0001-01-01T00:00:00.000Z", "updated_at": "0001-01-01T00:00:00.000Z"})))
        .await;
    assert_eq!(st, 200, "{f}");
    assert_ne!(f["created_at"], "0001-01-01T00:00:00.000Z");
}

async fn fn_id_on_create_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    err(
        s.post("/v2/fns", body(&a, json!({"id": "X"}))).await,
        400,
        "ID cannot be provided for Fn creation",
    );
}

async fn fn_missing_app_id_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post("/v2/fns", json!({"name": "f", "image": "i"})).await,
        400,
        "Missing AppID on Fn",
    );
}

async fn fn_missing_name_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post("/v2/fns", json!({"app_id": "A", "image": "i"}))
            .await,
        400,
        "Missing Fn name",
    );
}

async fn fn_name_over_255_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    err(
        s.post("/v2/fns", body(&a, json!({"name": "f".repeat(256)})))
            .await,
        400,
        "Fn name must be 255 characters or less",
    );
    s.func(&a, &"f".repeat(255)).await;
}

async fn fn_name_must_survive_path_escaping(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    for name in ["a b", "a/b", "a?b", "a;b", "a,b", "é", "a%20"] {
        err(
            s.post("/v2/fns", body(&a, json!({ "name": name }))).await,
            400,
            "name must be a valid string",
        );
    }
    for name in [
        "a.b", "a~b", "a_b-c", "a$b", "a&b", "a+b", "a:b", "a=b", "a@b",
    ] {
        s.func(&a, name).await;
    }
}

async fn fn_missing_image_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    err(
        s.post("/v2/fns", json!({"app_id": a, "name": "f"})).await,
        400,
        "Missing image on Fn",
    );
}

async fn fn_timeout_out_of_range_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    for t in [301, -1] {
        err(
            s.post("/v2/fns", body(&a, json!({ "timeout": t }))).await,
            400,
            "timeout value is out of range, must be between 0 and 300",
        );
    }
    let (st, f) = s.post("/v2/fns", body(&a, json!({"timeout": 300}))).await;
    assert_eq!((st, f["timeout"].as_i64()), (200, Some(300)));
}

async fn fn_idle_timeout_out_of_range_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    for t in [3601, -5] {
        err(
            s.post("/v2/fns", body(&a, json!({ "idle_timeout": t })))
                .await,
            400,
            "idle_timeout value is out of range, must be between 0 and 3600",
        );
    }
    let (st, f) = s
        .post("/v2/fns", body(&a, json!({"idle_timeout": 3600})))
        .await;
    assert_eq!((st, f["idle_timeout"].as_i64()), (200, Some(3600)));
}

async fn fn_memory_out_of_range_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    err(
        s.post("/v2/fns", body(&a, json!({"memory": 8193}))).await,
        400,
        "memory value is out of range. It should be between 0 and 8192",
    );
    let (st, f) = s.post("/v2/fns", body(&a, json!({"memory": 8192}))).await;
    assert_eq!((st, f["memory"].as_u64()), (200, Some(8192)));
}

async fn fn_format_is_checked_stored_and_merged(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    err(
        s.post("/v2/fns", body(&a, json!({"format": "wazzup"})))
            .await,
        400,
        "Invalid Protocol",
    );
    for (i, fmt) in ["http-stream", "default", "http", "json", "cloudevent"]
        .iter()
        .enumerate()
    {
        let (st, f) = s
            .post(
                "/v2/fns",
                body(&a, json!({"name": format!("f{i}"), "format": fmt})),
            )
            .await;
        assert_eq!((st, f["format"].as_str()), (200, Some(*fmt)));
        assert_eq!(
            s.get(&format!("/v2/fns/{}", id(&f))).await.1["format"],
            *fmt
        );
    }
    let f = s.func(&a, "plain").await;
    let path = format!("/v2/fns/{}", id(&f));
    let (_, v) = s.put(&path, json!({"format": "json"})).await;
    assert_eq!(v["format"], "json");
    let (_, v) = s.put(&path, json!({"memory": 256})).await;
    assert_eq!(v["format"], "json", "absent format leaves it as is");
    err(
        s.put(&path, json!({"format": "xml"})).await,
        400,
        "Invalid Protocol",
    );
}

async fn fn_app_must_exist(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post("/v2/fns", body("NOAPP", json!({}))).await,
        404,
        "App not found",
    );
}

async fn fn_duplicate_name_is_409(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    s.func(&a, "f").await;
    err(
        s.post("/v2/fns", body(&a, json!({}))).await,
        409,
        "Fn with specified name already exists",
    );
    // Same name in another app is fine.
    let a2 = id(&s.app("a2").await);
    s.func(&a2, "f").await;
}

async fn fn_shape_is_copied_from_app(b: Backend) {
    let s = Srv::start(b).await;
    let (_, a) = s
        .post("/v2/apps", json!({"name": "a", "shape": "GENERIC_ARM"}))
        .await;
    let (_, f) = s
        .post("/v2/fns", body(&id(&a), json!({"shape": "GENERIC_X86"})))
        .await;
    assert_eq!(f["shape"], "GENERIC_ARM");
    // Fields in Fn's order (shape between the timestamps).
    let keys: Vec<&str> = f.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "app_id",
            "image",
            "memory",
            "timeout",
            "idle_timeout",
            "config",
            "annotations",
            "created_at",
            "shape",
            "updated_at"
        ]
    );
}

async fn fn_get_and_list_are_annotated(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    let want = format!("http://{}/invoke/{}", s.server.addr(), id(&f));
    let (st, got) = s.get(&format!("/v2/fns/{}", id(&f))).await;
    assert_eq!(st, 200);
    assert_eq!(got["annotations"]["fnproject.io/fn/invokeEndpoint"], want);
    let (_, list) = s.get(&format!("/v2/fns?app_id={a}")).await;
    assert_eq!(
        list["items"][0]["annotations"]["fnproject.io/fn/invokeEndpoint"],
        want
    );
    err(s.get("/v2/fns/NOPE").await, 404, "Fn not found");
    err(s.get("/v2/fns").await, 400, "Missing AppID on Fn");
}

async fn fn_invoke_endpoint_uses_public_lb_url(b: Backend) {
    let s = Srv::start_with(
        b,
        ServerOptions::default().env("FN_PUBLIC_LB_URL", "https://fn.example.com/"),
    )
    .await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    assert_eq!(
        f["annotations"]["fnproject.io/fn/invokeEndpoint"],
        format!("https://fn.example.com/invoke/{}", id(&f))
    );
}

async fn fn_update_merges_and_is_not_annotated(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let (_, f) = s
        .post(
            "/v2/fns",
            body(
                &a,
                json!({"config": {"A": "1", "B": "2"}, "annotations": {"x": 1}}),
            ),
        )
        .await;
    let path = format!("/v2/fns/{}", id(&f));
    let (st, v) = s
        .put(
            &path,
            json!({"image": "other:2", "memory": 512, "timeout": 60, "idle_timeout": 90,
                           "config": {"A": "", "C": "3"}, "annotations": {"x": "", "y": [1]}}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["image"], "other:2");
    assert_eq!(
        (
            v["memory"].as_u64(),
            v["timeout"].as_i64(),
            v["idle_timeout"].as_i64()
        ),
        (Some(512), Some(60), Some(90))
    );
    assert_eq!(v["config"], json!({"B": "2", "C": "3"}));
    assert_eq!(v["annotations"], json!({"y": [1]}));
    let (_, got) = s.get(&path).await;
    assert_eq!(got["config"], v["config"]);
    // Zero/empty values leave fields alone.
    let (_, v2) = s
        .put(&path, json!({"image": "", "memory": 0, "timeout": 0}))
        .await;
    assert_eq!(
        (v2["image"].as_str(), v2["memory"].as_u64()),
        (Some("other:2"), Some(512))
    );
}

async fn fn_update_ignores_name_and_app_id(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    let (st, v) = s
        .put(
            &format!("/v2/fns/{}", id(&f)),
            json!({"name": "g", "app_id": "OTHER"}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["name"].as_str(), v["app_id"].as_str()),
        (Some("f"), Some(a.as_str()))
    );
}

async fn fn_update_id_mismatch_is_400_and_stops(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    let path = format!("/v2/fns/{}", id(&f));
    err(
        s.put(&path, json!({"id": "OTHER", "memory": 999})).await,
        400,
        "Fn ID in path does not match that in body",
    );
    assert_eq!(s.get(&path).await.1["memory"], 128);
}

async fn fn_update_is_revalidated(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    let path = format!("/v2/fns/{}", id(&f));
    err(
        s.put(&path, json!({"timeout": 301})).await,
        400,
        "timeout value is out of range, must be between 0 and 300",
    );
    err(
        s.put(&path, json!({"memory": 9000})).await,
        400,
        "memory value is out of range. It should be between 0 and 8192",
    );
    err(s.put("/v2/fns/NOPE", json!({})).await, 404, "Fn not found");
}

async fn fn_update_accepts_the_whole_object_echoed(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let f = s.func(&a, "f").await;
    let mut echo = f.clone();
    echo["memory"] = json!(256);
    let (st, v) = s.put(&format!("/v2/fns/{}", id(&f)), echo).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["memory"], 256);
    // The server's own annotation is not stored from the echo.
    assert!(v.get("annotations").is_none(), "{v}");
}

async fn fn_delete_is_204_and_removes_triggers(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f, t) = s.app_fn_trigger().await;
    let (st, v) = s.delete(&format!("/v2/fns/{f}")).await;
    assert_eq!((st, v), (204, Value::Null));
    err(s.get(&format!("/v2/fns/{f}")).await, 404, "Fn not found");
    err(
        s.get(&format!("/v2/triggers/{t}")).await,
        404,
        "Trigger not found",
    );
    err(s.delete(&format!("/v2/fns/{f}")).await, 404, "Fn not found");
    assert_eq!(s.get(&format!("/v2/apps/{a}")).await.0, 200);
}

/// `.` and `..` survive path escaping but name no file and no URL segment.
async fn fn_name_may_not_be_a_dot_segment(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    for name in [".", ".."] {
        err(
            s.post("/v2/fns", body(&a, json!({ "name": name }))).await,
            400,
            "name must be a valid string",
        );
    }
    for name in ["...", ".a", "a.."] {
        s.func(&a, name).await;
    }
}

/// Config entries become environment variables of the function.
async fn fn_config_must_fit_the_environment(b: Backend) {
    let s = Srv::start(b).await;
    let a = id(&s.app("a").await);
    let key = "Invalid config key, config keys must be non-empty and may not contain '=' or NUL characters";
    let value = "Invalid config value, config values may not contain NUL characters";
    err(
        s.post("/v2/fns", body(&a, json!({"config": {"K": "\u{0}"}})))
            .await,
        400,
        value,
    );
    err(
        s.post("/v2/fns", body(&a, json!({"config": {"K=": "v"}})))
            .await,
        400,
        key,
    );
    let f = s.func(&a, "f").await;
    let path = format!("/v2/fns/{}", id(&f));
    err(
        s.put(&path, json!({"config": {"K\u{0}": "v"}})).await,
        400,
        key,
    );
    err(
        s.put(&path, json!({"config": {"K": "a\u{0}"}})).await,
        400,
        value,
    );
    assert_eq!(s.get(&path).await.1["config"], json!({}));
}

both!(
    fn_name_may_not_be_a_dot_segment,
    fn_config_must_fit_the_environment,
    fn_create_applies_defaults_and_annotates,
    fn_create_counts_zero_timestamps_as_absent,
    fn_id_on_create_is_400,
    fn_missing_app_id_is_400,
    fn_missing_name_is_400,
    fn_name_over_255_is_400,
    fn_name_must_survive_path_escaping,
    fn_missing_image_is_400,
    fn_timeout_out_of_range_is_400,
    fn_idle_timeout_out_of_range_is_400,
    fn_memory_out_of_range_is_400,
    fn_format_is_checked_stored_and_merged,
    fn_app_must_exist,
    fn_duplicate_name_is_409,
    fn_shape_is_copied_from_app,
    fn_get_and_list_are_annotated,
    fn_invoke_endpoint_uses_public_lb_url,
    fn_update_merges_and_is_not_annotated,
    fn_update_ignores_name_and_app_id,
    fn_update_id_mismatch_is_400_and_stops,
    fn_update_is_revalidated,
    fn_update_accepts_the_whole_object_echoed,
    fn_delete_is_204_and_removes_triggers,
);
