//! Handlers of the v2 management API, calls and logs, and the small
//! endpoints. Each one parses, calls the store and maps the answer.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::response::{IntoResponse, Response};
use fnrs_model::input::{AppInput, FnInput, TriggerInput};
use fnrs_model::validate::msg;
use fnrs_model::{
    ANNOTATION_HTTP_ENDPOINT, ANNOTATION_INVOKE_ENDPOINT, Annotations, App, AppFilter, CallFilter,
    DateTime, Error, Fn, FnFilter, Page, Trigger, TriggerFilter,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::error::{ApiError, FnJson, JsonResponse};
use crate::page::{Query, encode_cursor};
use crate::state::{ApiState, FN_API_VERSION};

type S = State<Arc<ApiState>>;
type ApiResult = Result<Response, ApiError>;

/// A path parameter; one that does not decode is a 404 of the thing it names.
pub(crate) struct Param(pub String);

impl<St: Send + Sync> FromRequestParts<St> for Param {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &St,
    ) -> Result<Self, Self::Rejection> {
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(p)) => Ok(Param(p)),
            Err(_) => Err(ApiError::path_not_found(&method, &path)),
        }
    }
}

/// Two path parameters.
pub(crate) struct Params2(pub String, pub String);

impl<St: Send + Sync> FromRequestParts<St> for Params2 {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &St,
    ) -> Result<Self, Self::Rejection> {
        let method = parts.method.clone();
        let path = parts.uri.path().to_owned();
        match axum::extract::Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path((a, b))) => Ok(Params2(a, b)),
            Err(_) => Err(ApiError::path_not_found(&method, &path)),
        }
    }
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Base of the endpoint annotations: `FN_PUBLIC_LB_URL`, else `http://<Host>`.
fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    match &state.config.public_lb_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

/// Go marshals maps with sorted keys.
fn sorted(a: &mut Annotations) {
    a.sort_keys();
}

fn out_app(mut a: App) -> App {
    sorted(&mut a.annotations);
    a
}

/// A fn as Fn writes it: Go's field order (`shape` between the timestamps).
#[derive(serde::Serialize)]
pub(crate) struct FnOut {
    id: String,
    name: String,
    app_id: String,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    memory: u64,
    timeout: i32,
    idle_timeout: i32,
    config: fnrs_model::Config,
    #[serde(skip_serializing_if = "Annotations::is_empty")]
    annotations: Annotations,
    created_at: DateTime,
    #[serde(skip_serializing_if = "String::is_empty")]
    shape: String,
    updated_at: DateTime,
}

fn out_fn(mut f: Fn, base: Option<&str>) -> FnOut {
    if let Some(base) = base {
        f.annotations.insert(
            ANNOTATION_INVOKE_ENDPOINT.to_owned(),
            json!(format!("{base}/invoke/{}", f.id)),
        );
    }
    sorted(&mut f.annotations);
    FnOut {
        id: f.id,
        name: f.name,
        app_id: f.app_id,
        image: f.image,
        format: f.format,
        memory: f.memory,
        timeout: f.timeout,
        idle_timeout: f.idle_timeout,
        config: f.config,
        annotations: f.annotations,
        created_at: f.created_at,
        shape: f.shape,
        updated_at: f.updated_at,
    }
}

fn out_trigger(mut t: Trigger, app_name_and_base: Option<(&str, &str)>) -> Trigger {
    if let Some((app_name, base)) = app_name_and_base
        && t.kind == "http"
    {
        let src = t.source.strip_prefix('/').unwrap_or(&t.source);
        t.annotations.insert(
            ANNOTATION_HTTP_ENDPOINT.to_owned(),
            json!(format!("{base}/t/{app_name}/{src}")),
        );
    }
    sorted(&mut t.annotations);
    t
}

/// Server-owned annotations a client may echo back; never stored.
fn strip_owned(a: &mut Option<Annotations>, key: &str) {
    if let Some(a) = a {
        a.shift_remove(key);
    }
}

fn page<T: serde::Serialize>(
    items: Vec<T>,
    per_page: u32,
    last: impl std::ops::Fn(&T) -> &str,
) -> Response {
    let next_cursor = match items.last() {
        Some(l) if items.len() == per_page as usize => encode_cursor(last(l)),
        _ => String::new(),
    };
    JsonResponse::ok(&Page { next_cursor, items }).into_response()
}

// ---------------------------------------------------------------- misc

/// `GET /`.
pub(crate) async fn root() -> Response {
    JsonResponse::ok(&json!({"goto": "https://github.com/fnproject/fn", "hello": "world!"}))
        .into_response()
}

/// `GET /version`.
pub(crate) async fn version() -> Response {
    JsonResponse::ok(&json!({ "version": FN_API_VERSION })).into_response()
}

/// `GET /health`.
pub(crate) async fn health(State(s): S) -> Response {
    let invoker = s.invoker.health().await;
    JsonResponse::ok(&json!({
        "status": "ok",
        "fnrs_version": env!("CARGO_PKG_VERSION"),
        "invoker": invoker,
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(s): S) -> Response {
    let mut body = s.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    body.push_str(&s.invoker.metrics_text());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// `GET /v2/openapi.json`.
pub(crate) async fn openapi() -> Response {
    JsonResponse(StatusCode::OK, crate::OPENAPI_JSON.as_bytes().to_vec()).into_response()
}

// ---------------------------------------------------------------- apps

pub(crate) async fn list_apps(State(s): S, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let filter = AppFilter {
        name: q.get("name").map(str::to_owned),
        cursor: q.cursor()?,
        per_page: q.per_page(),
    };
    let apps = s.store.list_apps(&filter).await?;
    let apps: Vec<App> = apps.into_iter().map(out_app).collect();
    Ok(page(apps, filter.per_page, |a| &a.name))
}

pub(crate) async fn create_app(State(s): S, FnJson(input): FnJson<AppInput>) -> ApiResult {
    let app = input.create(s.ids.next_id(), DateTime::now())?;
    s.store.insert_app(&app).await?;
    Ok(JsonResponse::ok(&out_app(app)).into_response())
}

pub(crate) async fn get_app(State(s): S, Param(id): Param) -> ApiResult {
    let app = s.store.get_app(&id).await?;
    Ok(JsonResponse::ok(&out_app(app)).into_response())
}

pub(crate) async fn update_app(
    State(s): S,
    Param(id): Param,
    FnJson(input): FnJson<AppInput>,
) -> ApiResult {
    if input
        .id
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b != id)
    {
        return Err(Error::new(400, msg::APP_ID_MISMATCH).into());
    }
    let current = s.store.get_app(&id).await?;
    let app = input.merge_into(&current, DateTime::now())?;
    if app != current {
        s.store.update_app(&app).await?;
    }
    Ok(JsonResponse::ok(&out_app(app)).into_response())
}

pub(crate) async fn delete_app(State(s): S, Param(id): Param) -> ApiResult {
    s.store.remove_app(&id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- fns

pub(crate) async fn list_fns(State(s): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let Some(app_id) = q.get("app_id") else {
        return Err(Error::new(400, msg::FN_MISSING_APP_ID).into());
    };
    let filter = FnFilter {
        app_id: app_id.to_owned(),
        name: q.get("name").map(str::to_owned),
        cursor: q.cursor()?,
        per_page: q.per_page(),
    };
    let fns = s.store.list_fns(&filter).await?;
    let base = base_url(&s, &headers);
    let fns: Vec<FnOut> = fns.into_iter().map(|f| out_fn(f, Some(&base))).collect();
    Ok(page(fns, filter.per_page, |f| &f.name))
}

pub(crate) async fn create_fn(
    State(s): S,
    headers: HeaderMap,
    FnJson(mut input): FnJson<FnInput>,
) -> ApiResult {
    strip_owned(&mut input.annotations, ANNOTATION_INVOKE_ENDPOINT);
    let mut f = input.create(s.ids.next_id(), DateTime::now())?;
    let app = s.store.get_app(&f.app_id).await?;
    f.shape = app.shape;
    s.invoker.check_image(&f.image).await?;
    s.store.insert_fn(&f).await?;
    Ok(JsonResponse::ok(&out_fn(f, Some(&base_url(&s, &headers)))).into_response())
}

pub(crate) async fn get_fn(State(s): S, headers: HeaderMap, Param(id): Param) -> ApiResult {
    let f = s.store.get_fn(&id).await?;
    Ok(JsonResponse::ok(&out_fn(f, Some(&base_url(&s, &headers)))).into_response())
}

pub(crate) async fn update_fn(
    State(s): S,
    Param(id): Param,
    FnJson(mut input): FnJson<FnInput>,
) -> ApiResult {
    if input
        .id
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b != id)
    {
        return Err(Error::new(400, msg::FN_ID_MISMATCH).into());
    }
    strip_owned(&mut input.annotations, ANNOTATION_INVOKE_ENDPOINT);
    let current = s.store.get_fn(&id).await?;
    let f = input.merge_into(&current, DateTime::now())?;
    if f.image != current.image {
        s.invoker.check_image(&f.image).await?;
    }
    if f != current {
        s.store.update_fn(&f).await?;
    }
    Ok(JsonResponse::ok(&out_fn(f, None)).into_response())
}

pub(crate) async fn delete_fn(State(s): S, Param(id): Param) -> ApiResult {
    s.store.remove_fn(&id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- triggers

pub(crate) async fn list_triggers(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let Some(app_id) = q.get("app_id") else {
        return Err(Error::new(400, msg::TRIGGER_MISSING_APP_ID).into());
    };
    let filter = TriggerFilter {
        app_id: app_id.to_owned(),
        fn_id: q.get("fn_id").map(str::to_owned),
        name: q.get("name").map(str::to_owned),
        cursor: q.cursor()?,
        per_page: q.per_page(),
    };
    let triggers = s.store.list_triggers(&filter).await?;
    let app_name = match triggers.first() {
        Some(t) => s.store.get_app(&t.app_id).await?.name,
        None => String::new(),
    };
    let base = base_url(&s, &headers);
    let triggers: Vec<Trigger> = triggers
        .into_iter()
        .map(|t| out_trigger(t, Some((&app_name, &base))))
        .collect();
    Ok(page(triggers, filter.per_page, |t| &t.name))
}

/// The trigger's fn must exist and belong to the trigger's app.
async fn check_trigger_fn(s: &ApiState, t: &Trigger) -> Result<(), ApiError> {
    let f = s.store.get_fn(&t.fn_id).await?;
    if f.app_id != t.app_id {
        return Err(Error::new(400, msg::TRIGGER_FN_NOT_SAME_APP).into());
    }
    Ok(())
}

pub(crate) async fn create_trigger(
    State(s): S,
    headers: HeaderMap,
    FnJson(mut input): FnJson<TriggerInput>,
) -> ApiResult {
    strip_owned(&mut input.annotations, ANNOTATION_HTTP_ENDPOINT);
    let t = input.create(s.ids.next_id(), DateTime::now())?;
    let app = s.store.get_app(&t.app_id).await?;
    check_trigger_fn(&s, &t).await?;
    s.store.insert_trigger(&t).await?;
    let base = base_url(&s, &headers);
    Ok(JsonResponse::ok(&out_trigger(t, Some((&app.name, &base)))).into_response())
}

pub(crate) async fn get_trigger(State(s): S, headers: HeaderMap, Param(id): Param) -> ApiResult {
    let t = s.store.get_trigger(&id).await?;
    let app = s.store.get_app(&t.app_id).await?;
    let base = base_url(&s, &headers);
    Ok(JsonResponse::ok(&out_trigger(t, Some((&app.name, &base)))).into_response())
}

pub(crate) async fn update_trigger(
    State(s): S,
    Param(id): Param,
    FnJson(mut input): FnJson<TriggerInput>,
) -> ApiResult {
    if input
        .id
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b != id)
    {
        return Err(Error::new(400, msg::TRIGGER_ID_MISMATCH).into());
    }
    strip_owned(&mut input.annotations, ANNOTATION_HTTP_ENDPOINT);
    let current = s.store.get_trigger(&id).await?;
    let t = input.merge_into(&current, DateTime::now())?;
    if t.fn_id != current.fn_id {
        check_trigger_fn(&s, &t).await?;
    }
    if t != current {
        s.store.update_trigger(&t).await?;
    }
    Ok(JsonResponse::ok(&out_trigger(t, None)).into_response())
}

pub(crate) async fn delete_trigger(State(s): S, Param(id): Param) -> ApiResult {
    s.store.remove_trigger(&id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------- calls and logs

pub(crate) async fn list_calls(
    State(s): S,
    Param(fn_id): Param,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
    s.store.get_fn(&fn_id).await?;
    let filter = CallFilter {
        fn_id,
        cursor: q.cursor()?,
        per_page: q.per_page(),
    };
    let calls = s.store.list_calls(&filter).await?;
    Ok(page(calls, filter.per_page, |c| &c.id))
}

pub(crate) async fn get_call(State(s): S, Params2(fn_id, call_id): Params2) -> ApiResult {
    s.store.get_fn(&fn_id).await?;
    let call = s.store.get_call(&fn_id, &call_id).await?;
    Ok(JsonResponse::ok(&call).into_response())
}

/// True when the client asks for JSON before plain text (Fn 2018's log API
/// answered `{"message","log":{"call_id","log"}}` then).
fn wants_json(headers: &HeaderMap) -> bool {
    for v in headers.get_all(header::ACCEPT) {
        let v = v.to_str().unwrap_or("");
        match (v.find("application/json"), v.find("text/plain")) {
            (Some(j), Some(t)) => return j < t,
            (Some(_), None) => return true,
            (None, Some(_)) => return false,
            (None, None) => {}
        }
    }
    false
}

pub(crate) async fn get_log(
    State(s): S,
    headers: HeaderMap,
    Params2(fn_id, call_id): Params2,
) -> ApiResult {
    s.store.get_fn(&fn_id).await?;
    s.store.get_call(&fn_id, &call_id).await?;
    // A call that wrote nothing has no stored log: its log is empty.
    let log = match s.store.get_log(&call_id).await {
        Err(e) if e == fnrs_model::Error::CALL_LOG_NOT_FOUND => Vec::new(),
        other => other?,
    };
    if wants_json(&headers) {
        return Ok(JsonResponse::ok(&json!({
            "message": "Successfully loaded log",
            "log": {"call_id": call_id, "log": String::from_utf8_lossy(&log)},
        }))
        .into_response());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        log,
    )
        .into_response())
}
