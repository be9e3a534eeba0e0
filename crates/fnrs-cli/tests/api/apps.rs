//! Contract §4.2: apps, and the annotation rules (checked on apps, fns and triggers).

use serde_json::{Value, json};

use crate::both;
use crate::common::*;

async fn app_create_returns_200_and_the_app(b: Backend) {
    let s = Srv::start(b).await;
    let (st, v) = s
        .post(
            "/v2/apps",
            json!({"name": "a1", "config": {"B": "2", "A": "1"}, "annotations": {"k": {"z": 1, "a": [1, 2]}},
                   "syslog_url": "tcp://logs:514", "shape": "GENERIC_X86"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "a1");
    assert_eq!(v["config"], json!({"A": "1", "B": "2"}));
    assert_eq!(v["annotations"], json!({"k": {"z": 1, "a": [1, 2]}}));
    assert_eq!(v["syslog_url"], "tcp://logs:514");
    assert_eq!(v["shape"], "GENERIC_X86");
    let (st, got) = s.get(&format!("/v2/apps/{}", id(&v))).await;
    assert_eq!(st, 200);
    assert_eq!(got, v);
    // Empty config, annotations, syslog and shape are omitted.
    let bare = s.app("bare").await;
    let keys: Vec<&str> = bare
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["id", "name", "created_at", "updated_at"]);
}

async fn app_create_counts_zero_timestamps_as_absent(b: Backend) {
    let s = Srv::start(b).await;
    let (st, v) = s
        .post(
            "/v2/apps",
            json!({"created_at": "0001-01-01T00:00:00.000Z", "name": "a2", "updated_at": "0001-01-01T00:00:00.000Z"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["created_at"], "0001-01-01T00:00:00.000Z");
}

async fn app_id_on_create_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post("/v2/apps", json!({"id": "X", "name": "a"})).await,
        400,
        "App ID cannot be supplied on create",
    );
}

async fn app_missing_name_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(s.post("/v2/apps", json!({})).await, 400, "Missing Name");
    err(
        s.post("/v2/apps", json!({"name": ""})).await,
        400,
        "Missing Name",
    );
}

async fn app_name_over_255_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post("/v2/apps", json!({"name": "a".repeat(256)})).await,
        400,
        "App name must be 255 characters or less",
    );
    s.app(&"a".repeat(255)).await;
    // Bytes, not characters: 128 two-byte letters are 256 bytes.
    err(
        s.post("/v2/apps", json!({"name": "é".repeat(128)})).await,
        400,
        "App name must be 255 characters or less",
    );
}

async fn app_invalid_name_is_400(b: Backend) {
    let s = Srv::start(b).await;
    for name in ["a b", "a/b", "a.b", "a:b", "ä!"] {
        err(
            s.post("/v2/apps", json!({ "name": name })).await,
            400,
            "Invalid app name",
        );
    }
    for name in ["under_score", "da-sh", "Ünïcödé", "日本", "x9"] {
        s.app(name).await;
    }
}

async fn app_syslog_url_scheme_is_checked(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post(
            "/v2/apps",
            json!({"name": "a", "syslog_url": "http://logs"}),
        )
        .await,
        400,
        r#"invalid syslog url: "http://logs" invalid scheme, only [tcp, udp, unix, unixgram, tcp+tls] are supported"#,
    );
    err(
        s.post("/v2/apps", json!({"name": "a", "syslog_url": "://logs"}))
            .await,
        400,
        r#"invalid syslog url: "://logs" parse "://logs": missing protocol scheme"#,
    );
    for (i, u) in [
        "udp://h:514",
        "tcp://h:514",
        "unix:///dev/log",
        "unixgram:///dev/log",
        "tcp+tls://h:6514",
    ]
    .iter()
    .enumerate()
    {
        let (st, v) = s
            .post(
                "/v2/apps",
                json!({"name": format!("s{i}"), "syslog_url": u}),
            )
            .await;
        assert_eq!(st, 200, "{u}: {v}");
    }
    // Empty means none.
    let (st, v) = s
        .post("/v2/apps", json!({"name": "e", "syslog_url": ""}))
        .await;
    assert_eq!(st, 200);
    assert!(v.get("syslog_url").is_none());
}

async fn app_shape_is_checked(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post("/v2/apps", json!({"name": "a", "shape": "BIG"}))
            .await,
        400,
        "Invalid app shape",
    );
    for (i, sh) in ["GENERIC_X86", "GENERIC_ARM", "GENERIC_X86_ARM"]
        .iter()
        .enumerate()
    {
        let (st, v) = s
            .post("/v2/apps", json!({"name": format!("s{i}"), "shape": sh}))
            .await;
        assert_eq!((st, v["shape"].as_str()), (200, Some(*sh)));
    }
}

async fn app_duplicate_name_is_409(b: Backend) {
    let s = Srv::start(b).await;
    s.app("dup").await;
    err(
        s.post("/v2/apps", json!({"name": "dup"})).await,
        409,
        "App already exists",
    );
}

async fn app_get_missing_is_404(b: Backend) {
    let s = Srv::start(b).await;
    err(s.get("/v2/apps/01ABC").await, 404, "App not found");
}

async fn app_update_merges_config_and_annotations(b: Backend) {
    let s = Srv::start(b).await;
    let (_, a) = s
        .post(
            "/v2/apps",
            json!({"name": "m", "config": {"A": "1", "B": "2"}, "annotations": {"x": 1, "y": 2}}),
        )
        .await;
    let path = format!("/v2/apps/{}", id(&a));
    let (st, v) = s
        .put(
            &path,
            json!({"config": {"A": "", "C": "3"}, "annotations": {"x": null, "y": "", "z": true}}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["config"], json!({"B": "2", "C": "3"}));
    assert_eq!(v["annotations"], json!({"z": true}));
    assert_eq!(s.get(&path).await.1, v);
}

async fn app_update_id_mismatch_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let a = s.app("a").await;
    let path = format!("/v2/apps/{}", id(&a));
    err(
        s.put(&path, json!({"id": "OTHER", "config": {"A": "1"}}))
            .await,
        400,
        "App ID in path does not match ID in body",
    );
    // Nothing was changed.
    assert!(s.get(&path).await.1.get("config").is_none());
}

async fn app_update_name_is_immutable(b: Backend) {
    let s = Srv::start(b).await;
    let a = s.app("a").await;
    err(
        s.put(&format!("/v2/apps/{}", id(&a)), json!({"name": "b"}))
            .await,
        409,
        "Could not update - name is immutable",
    );
}

async fn app_update_accepts_the_whole_object_echoed(b: Backend) {
    let s = Srv::start(b).await;
    let a = s.app("a").await;
    let mut body = a.clone();
    body["config"] = json!({"K": "V"});
    let (st, v) = s.put(&format!("/v2/apps/{}", id(&a)), body).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["config"], json!({"K": "V"}));
    assert_eq!(v["created_at"], a["created_at"]);
}

async fn app_update_syslog_replaced_and_cleared_shape_kept(b: Backend) {
    let s = Srv::start(b).await;
    let (_, a) = s
        .post("/v2/apps", json!({"name": "a", "shape": "GENERIC_ARM"}))
        .await;
    let path = format!("/v2/apps/{}", id(&a));
    let (_, v) = s
        .put(
            &path,
            json!({"syslog_url": "udp://h:1", "shape": "GENERIC_X86"}),
        )
        .await;
    assert_eq!(v["syslog_url"], "udp://h:1");
    assert_eq!(v["shape"], "GENERIC_ARM");
    let (_, v) = s.put(&path, json!({"syslog_url": ""})).await;
    assert!(v.get("syslog_url").is_none());
}

async fn app_update_is_revalidated(b: Backend) {
    let s = Srv::start(b).await;
    let a = s.app("a").await;
    let path = format!("/v2/apps/{}", id(&a));
    err(
        s.put(&path, json!({"syslog_url": "ftp://x"})).await,
        400,
        r#"invalid syslog url: "ftp://x" invalid scheme, only [tcp, udp, unix, unixgram, tcp+tls] are supported"#,
    );
    err(
        s.put(&path, json!({"annotations": {"bad key": 1}})).await,
        400,
        "Invalid annotation key, annotation keys must be non-empty ascii strings excluding whitespace",
    );
}

async fn app_update_bumps_updated_at_only_on_change(b: Backend) {
    let s = Srv::start(b).await;
    let a = s.app("a").await;
    let path = format!("/v2/apps/{}", id(&a));
    let (_, same) = s.put(&path, json!({})).await;
    assert_eq!(same["updated_at"], a["updated_at"]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (_, changed) = s.put(&path, json!({"config": {"A": "1"}})).await;
    assert!(changed["updated_at"].as_str() > a["updated_at"].as_str());
    assert_eq!(changed["created_at"], a["created_at"]);
}

async fn app_update_missing_is_404(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.put("/v2/apps/NOPE", json!({})).await,
        404,
        "App not found",
    );
}

async fn app_delete_is_204_and_cascades(b: Backend) {
    let s = Srv::start(b).await;
    let (a, f, t) = s.app_fn_trigger().await;
    let r = s.raw("DELETE", &format!("/v2/apps/{a}"), "").await;
    assert_eq!(r.status(), 204);
    assert!(r.text().await.unwrap().is_empty());
    err(s.get(&format!("/v2/apps/{a}")).await, 404, "App not found");
    err(s.get(&format!("/v2/fns/{f}")).await, 404, "Fn not found");
    err(
        s.get(&format!("/v2/triggers/{t}")).await,
        404,
        "Trigger not found",
    );
    err(
        s.delete(&format!("/v2/apps/{a}")).await,
        404,
        "App not found",
    );
    // The name is free again.
    s.app("a").await;
}

// ---------------------------------------------------------------- annotations

const KEY_MSG: &str =
    "Invalid annotation key, annotation keys must be non-empty ascii strings excluding whitespace";

async fn annotation_key_must_be_printable_ascii(b: Backend) {
    let s = Srv::start(b).await;
    for k in ["", "a b", "tab\tkey", "ключ", "new\nline"] {
        err(
            s.post("/v2/apps", json!({"name": "a", "annotations": { k: 1 }}))
                .await,
            400,
            KEY_MSG,
        );
    }
    let (st, _) = s
        .post(
            "/v2/apps",
            json!({"name": "a", "annotations": {"!~/.:x": 1}}),
        )
        .await;
    assert_eq!(st, 200);
}

async fn annotation_key_over_128_bytes_is_400(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.post(
            "/v2/apps",
            json!({"name": "a", "annotations": { "k".repeat(129): 1 }}),
        )
        .await,
        400,
        "Invalid annotation key length, annotation keys may not be larger than 128 bytes",
    );
    let (st, _) = s
        .post(
            "/v2/apps",
            json!({"name": "a", "annotations": { "k".repeat(128): 1 }}),
        )
        .await;
    assert_eq!(st, 200);
}

async fn annotation_empty_value_on_create_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let msg = "Invalid annotation value, annotation values may only be non-empty strings, numbers, objects, or arrays";
    err(
        s.post("/v2/apps", json!({"name": "a", "annotations": {"k": ""}}))
            .await,
        400,
        msg,
    );
    err(
        s.post("/v2/apps", json!({"name": "a", "annotations": {"k": null}}))
            .await,
        400,
        msg,
    );
    let (a, f, _) = s.app_fn_trigger().await;
    err(
        s.post(
            "/v2/fns",
            json!({"app_id": a, "name": "g", "image": "i", "annotations": {"k": ""}}),
        )
        .await,
        400,
        msg,
    );
    err(
        s.post("/v2/triggers", json!({"app_id": a, "fn_id": f, "name": "u", "type": "http", "source": "/u", "annotations": {"k": null}})).await,
        400,
        msg,
    );
}

async fn annotation_value_over_512_bytes_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let msg = "Invalid annotation value length, annotation values may not be larger than 512 bytes when serialized as JSON";
    // A string of 511 characters is 513 bytes of JSON.
    err(
        s.post(
            "/v2/apps",
            json!({"name": "a", "annotations": {"k": "x".repeat(511)}}),
        )
        .await,
        400,
        msg,
    );
    let (st, _) = s
        .post(
            "/v2/apps",
            json!({"name": "a", "annotations": {"k": "x".repeat(510)}}),
        )
        .await;
    assert_eq!(st, 200);
}

async fn annotations_over_100_keys_is_400(b: Backend) {
    let s = Srv::start(b).await;
    let many = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    err(
        s.post("/v2/apps", json!({"name": "a", "annotations": many(101)}))
            .await,
        400,
        "Invalid annotation change, new key(s) exceed maximum permitted number of annotations keys (100)",
    );
    let (st, a) = s
        .post("/v2/apps", json!({"name": "a", "annotations": many(100)}))
        .await;
    assert_eq!(st, 200);
    // One more through an update is refused too.
    err(
        s.put(
            &format!("/v2/apps/{}", id(&a)),
            json!({"annotations": {"extra": 1}}),
        )
        .await,
        400,
        "Invalid annotation change, new key(s) exceed maximum permitted number of annotations keys (100)",
    );
}

async fn annotation_values_keep_json_shape(b: Backend) {
    let s = Srv::start(b).await;
    let r = s
        .raw(
            "POST",
            "/v2/apps",
            r#"{"name":"a","annotations":{"n": 12, "o": { "z" : 1, "a" : [ 1, "two" ] }, "s": "str"}}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#""annotations":{"n":12,"o":{"z":1,"a":[1,"two"]},"s":"str"}"#),
        "{text}"
    );
}

/// Config entries become environment variables of the function: a key with
/// `=` or NUL, an empty key or a value with NUL could never be passed.
async fn app_config_must_fit_the_environment(b: Backend) {
    let s = Srv::start(b).await;
    let key = "Invalid config key, config keys must be non-empty and may not contain '=' or NUL characters";
    let value = "Invalid config value, config values may not contain NUL characters";
    for (config, message) in [
        (json!({"K": "a\u{0}b"}), value),
        (json!({"K\u{0}": "v"}), key),
        (json!({"A=B": "v"}), key),
        (json!({"": "v"}), key),
    ] {
        err(
            s.post("/v2/apps", json!({"name": "a", "config": config}))
                .await,
            400,
            message,
        );
    }
    assert_eq!(s.get("/v2/apps").await.1, json!({"items": []}));
    // Values may hold `=`; an update is checked as a create is.
    let (st, a) = s
        .post("/v2/apps", json!({"name": "a", "config": {"K": "x=y"}}))
        .await;
    assert_eq!(st, 200, "{a}");
    let path = format!("/v2/apps/{}", id(&a));
    err(
        s.put(&path, json!({"config": {"L": "\u{0}"}})).await,
        400,
        value,
    );
    err(s.put(&path, json!({"config": {"=": "v"}})).await, 400, key);
    assert_eq!(s.get(&path).await.1["config"], json!({"K": "x=y"}));
}

both!(
    app_config_must_fit_the_environment,
    app_create_returns_200_and_the_app,
    app_create_counts_zero_timestamps_as_absent,
    app_id_on_create_is_400,
    app_missing_name_is_400,
    app_name_over_255_is_400,
    app_invalid_name_is_400,
    app_syslog_url_scheme_is_checked,
    app_shape_is_checked,
    app_duplicate_name_is_409,
    app_get_missing_is_404,
    app_update_merges_config_and_annotations,
    app_update_id_mismatch_is_400,
    app_update_name_is_immutable,
    app_update_accepts_the_whole_object_echoed,
    app_update_syslog_replaced_and_cleared_shape_kept,
    app_update_is_revalidated,
    app_update_bumps_updated_at_only_on_change,
    app_update_missing_is_404,
    app_delete_is_204_and_cascades,
    annotation_key_must_be_printable_ascii,
    annotation_key_over_128_bytes_is_400,
    annotation_empty_value_on_create_is_400,
    annotation_value_over_512_bytes_is_400,
    annotations_over_100_keys_is_400,
    annotation_values_keep_json_shape,
);
