//! The `fnrs.io/invoke-token` app annotation: calls to such an app's fns
//! (through `/invoke` and `/t`) need `Authorization: Bearer <token>` (the
//! server's `FN_API_TOKEN` works too); the function never sees a matched
//! header. Apps without it stay open, as in Fn.

use serde_json::json;

use crate::common::{Answer, Srv, example};

const ADMIN: &str = "admin-T0ken";
const APP_TOKEN: &str = "app-T0ken_42";
const UNAUTHORIZED: &str = "Invalid or missing authorization token";

async fn call(s: &Srv, path: &str, auth: Option<&str>) -> Answer {
    let mut r = s.http.post(s.url(path)).body("hi");
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    s.send(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_invoke_token_guards_its_calls_and_is_not_passed_on() {
    let s = Srv::start_with(&[("FN_API_TOKEN", ADMIN)]).await;
    let image = format!("file://{}", example("default-sh").display());
    let open_fn = s.func("open", &image, json!({"format": "default"})).await;
    s.trigger(&open_fn, "open", "/open").await;
    let (st, app) = s
        .json(
            "POST",
            "/v2/apps",
            Some(json!({"name": "locked", "annotations": {"fnrs.io/invoke-token": APP_TOKEN}})),
        )
        .await;
    assert_eq!(st, 200, "{app}");
    let locked_app = app["id"].as_str().unwrap().to_owned();
    let (st, f) = s
        .json(
            "POST",
            "/v2/fns",
            Some(json!({"app_id": locked_app, "name": "f", "image": image, "format": "default"})),
        )
        .await;
    assert_eq!(st, 200, "{f}");
    let locked_fn = f["id"].as_str().unwrap().to_owned();
    let (st, t) = s
        .json(
            "POST",
            "/v2/triggers",
            Some(json!({"app_id": locked_app, "fn_id": locked_fn, "name": "t", "type": "http", "source": "/echo"})),
        )
        .await;
    assert_eq!(st, 200, "{t}");

    let invoke = format!("/invoke/{locked_fn}");
    for path in [invoke.as_str(), "/t/locked/echo"] {
        for auth in [
            None,
            Some(format!("Bearer {APP_TOKEN}x")),
            Some(APP_TOKEN.to_owned()),
        ] {
            let a = call(&s, path, auth.as_deref()).await;
            assert_eq!(a.status, 401, "{path} {auth:?}: {a:?}");
            assert_eq!(a.json(), json!({"message": UNAUTHORIZED}));
            assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        }
        for good in [APP_TOKEN, ADMIN] {
            let a = call(&s, path, Some(&format!("Bearer {good}"))).await;
            assert_eq!(a.status, 200, "{path}: {a:?}");
            assert!(a.body.contains("input=hi"), "{a:?}");
            assert!(
                !a.body.to_ascii_lowercase().contains("authorization"),
                "the function does not see the token: {}",
                a.body
            );
        }
    }

    // An app without the annotation is open; a header that is not the
    // server's token is the function's business, the server's token is not.
    let open_invoke = format!("/invoke/{open_fn}");
    for path in [open_invoke.as_str(), "/t/e2e/open"] {
        let a = call(&s, path, None).await;
        assert_eq!(a.status, 200, "{a:?}");
        let a = call(&s, path, Some("Bearer for-the-function")).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.contains("Bearer for-the-function"), "{}", a.body);
        let a = call(&s, path, Some(&format!("Bearer {ADMIN}"))).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert!(!a.body.contains(ADMIN), "{}", a.body);
    }

    // Removing the annotation opens the app.
    let (st, v) = s
        .json(
            "PUT",
            &format!("/v2/apps/{locked_app}"),
            Some(json!({"annotations": {"fnrs.io/invoke-token": ""}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(call(&s, &invoke, None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_tokens_are_checked_on_create_and_update() {
    let s = Srv::start().await;
    let message = "Invalid annotation value for fnrs.io/invoke-token, it must be a string of 1 to 256 printable ASCII characters without spaces";
    let long = "x".repeat(257);
    for bad in [
        json!(5),
        json!("with space"),
        json!(long),
        json!({"a": 1}),
        json!("tab\t"),
    ] {
        let (st, v) = s
            .json(
                "POST",
                "/v2/apps",
                Some(json!({"name": "a", "annotations": {"fnrs.io/invoke-token": bad}})),
            )
            .await;
        assert_eq!((st, v), (400, json!({"message": message})), "{bad}");
    }
    let (st, v) = s
        .json(
            "PUT",
            &format!("/v2/apps/{}", s.app_id),
            Some(json!({"annotations": {"fnrs.io/invoke-token": "é"}})),
        )
        .await;
    assert_eq!((st, v), (400, json!({"message": message})));
    // On a fn or a trigger it would protect nothing: refused.
    let (st, v) = s
        .json(
            "POST",
            "/v2/fns",
            Some(
                json!({"app_id": s.app_id, "name": "f", "image": "fnproject/hello",
                "annotations": {"fnrs.io/invoke-token": "t0ken"}}),
            ),
        )
        .await;
    assert_eq!(
        (st, v),
        (
            400,
            json!({"message": "The fnrs.io/invoke-token annotation is only allowed on apps"})
        )
    );
    let (st, v) = s
        .json(
            "POST",
            "/v2/apps",
            Some(json!({"name": "ok", "annotations": {"fnrs.io/invoke-token": "x".repeat(256)}})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}
