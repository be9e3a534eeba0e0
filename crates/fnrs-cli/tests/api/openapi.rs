//! The OpenAPI document at /v2/openapi.json is kept true: real responses of
//! every documented operation are checked against it (status listed, media
//! type, body valid against the schema), and every operation it lists is
//! served.

use std::collections::BTreeSet;

use fnrs_testkit::server::ServerOptions;
use serde_json::{Value, json};

use crate::both;
use crate::common::*;

/// A small JSON-schema checker for the subset the document uses.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling $ref {r}");
        return check(doc, target, v, at, errs);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            errs.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} not in {e:?}"));
    }
    if let Some(s) = v.as_str() {
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && s.chars().count() as u64 > max
        {
            errs.push(format!("{at}: longer than {max}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") {
            let b = s.as_bytes();
            let ok =
                b.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z';
            if !ok {
                errs.push(format!("{at}: {s} is not RFC 3339 with milliseconds"));
            }
        }
    }
    if let Some(n) = v.as_i64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_i64)
            && n < min
        {
            errs.push(format!("{at}: {n} < {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_i64)
            && n > max
        {
            errs.push(format!("{at}: {n} > {max}"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                errs.push(format!("{at}: missing required {r}"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(doc, ps, val, &format!("{at}.{k}"), errs),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{at}: unexpected property {k}")),
                    Some(s @ Value::Object(_)) => check(doc, s, val, &format!("{at}.{k}"), errs),
                    _ => {}
                },
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, item) in a.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"), errs);
        }
    }
}

/// The documented path template a concrete path matches.
fn template<'d>(doc: &'d Value, path: &str) -> Option<&'d str> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut best = None;
    for t in doc["paths"].as_object().unwrap().keys() {
        let tsegs: Vec<&str> = t.split('/').collect();
        let multi = t == "/t/{app_name}/{source}";
        let len_ok = if multi {
            segs.len() >= tsegs.len()
        } else {
            segs.len() == tsegs.len()
        };
        if !len_ok {
            continue;
        }
        let lit_ok = tsegs.iter().zip(&segs).all(|(t, s)| {
            (t.starts_with('{') && !s.is_empty()) || t == s || (multi && t.starts_with('{'))
        });
        if lit_ok {
            // Prefer templates with more literal segments.
            let lits = tsegs.iter().filter(|t| !t.starts_with('{')).count();
            if best.is_none_or(|(_, l)| lits > l) {
                best = Some((t.as_str(), lits));
            }
        }
    }
    best.map(|(t, _)| t)
}

struct Checker {
    doc: Value,
    exercised: BTreeSet<(String, String)>,
    errs: Vec<String>,
}

impl Checker {
    async fn run(
        &mut self,
        s: &Srv,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        self.run_with(s, method, path, body, None).await
    }

    async fn run_with(
        &mut self,
        s: &Srv,
        method: &str,
        path: &str,
        body: Option<String>,
        accept: Option<&str>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = s.http.request(m, s.url(path));
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let bare = path.split('?').next().unwrap();
        let at = format!("{method} {path} → {status}");
        let Some(t) = template(&self.doc, bare) else {
            self.errs.push(format!("{at}: path not in the document"));
            return (status, Value::Null);
        };
        let op = &self.doc["paths"][t][method.to_ascii_lowercase()];
        if op.is_null() {
            self.errs
                .push(format!("{at}: operation not in the document"));
            return (status, Value::Null);
        }
        self.exercised
            .insert((t.to_owned(), method.to_ascii_lowercase()));
        let resp_doc = &op["responses"][status.to_string()];
        if resp_doc.is_null() {
            self.errs
                .push(format!("{at}: status not documented for {t}"));
            return (status, Value::Null);
        }
        let json_body = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
        match resp_doc.get("content").and_then(Value::as_object) {
            None => {
                if method != "HEAD" && status == 204 && !text.is_empty() {
                    self.errs.push(format!("{at}: 204 with a body"));
                }
            }
            Some(content) => {
                // The documented media type the answer has (or the first one).
                let (media, spec) = content
                    .iter()
                    .find(|(m, _)| ctype.starts_with(m.as_str()))
                    .unwrap_or_else(|| content.iter().next().unwrap());
                if !ctype.starts_with(media.as_str()) && media != "*/*" {
                    self.errs
                        .push(format!("{at}: content-type {ctype}, documented {media}"));
                }
                if media == "application/json" && method != "HEAD" {
                    let doc = self.doc.clone();
                    check(&doc, &spec["schema"], &json_body, &at, &mut self.errs);
                }
            }
        }
        (status, json_body)
    }
}

async fn responses_match_the_openapi_document(b: Backend) {
    let s = Srv::start_with(
        b,
        ServerOptions::default().env("FN_MAX_REQUEST_SIZE", "2048"),
    )
    .await;
    let (st, doc) = s.get("/v2/openapi.json").await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut c = Checker {
        doc,
        exercised: BTreeSet::new(),
        errs: Vec::new(),
    };
    let j = |v: Value| Some(v.to_string());
    let big = Some(format!(r#"{{"name":"{}"}}"#, "x".repeat(4000)));

    for p in ["/", "/version", "/health", "/metrics", "/v2/openapi.json"] {
        c.run(&s, "GET", p, None).await;
    }
    // apps
    let (_, app) = c.run(&s, "POST", "/v2/apps", j(json!({"name": "a", "config": {"K": "V"}, "annotations": {"x": [1]}, "syslog_url": "tcp://h:1", "shape": "GENERIC_X86"}))).await;
    let a = id(&app);
    c.run(&s, "POST", "/v2/apps", j(json!({"name": "a"}))).await; // 409
    c.run(&s, "POST", "/v2/apps", j(json!({"name": "bad name"})))
        .await; // 400
    c.run(&s, "POST", "/v2/apps", big.clone()).await; // 413
    c.run(&s, "GET", "/v2/apps", None).await;
    c.run(&s, "GET", "/v2/apps?per_page=1", None).await;
    c.run(&s, "GET", "/v2/apps?cursor=***", None).await; // 400
    c.run(&s, "GET", &format!("/v2/apps/{a}"), None).await;
    c.run(&s, "GET", "/v2/apps/NOPE", None).await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/apps/{a}"),
        j(json!({"config": {"K2": "V"}})),
    )
    .await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/apps/{a}"),
        j(json!({"name": "other"})),
    )
    .await; // 409
    c.run(&s, "PUT", &format!("/v2/apps/{a}"), j(json!({"id": "X"})))
        .await; // 400
    c.run(&s, "PUT", &format!("/v2/apps/{a}"), big.clone())
        .await; // 413
    c.run(&s, "PUT", "/v2/apps/NOPE", j(json!({}))).await; // 404
    // fns
    let (_, f) = c.run(&s, "POST", "/v2/fns", j(json!({"app_id": a, "name": "f", "image": "i", "format": "json", "annotations": {"k": "v"}}))).await;
    let fid = id(&f);
    c.run(
        &s,
        "POST",
        "/v2/fns",
        j(json!({"app_id": a, "name": "f", "image": "i"})),
    )
    .await; // 409
    c.run(
        &s,
        "POST",
        "/v2/fns",
        j(json!({"app_id": "NOPE", "name": "f", "image": "i"})),
    )
    .await; // 404
    c.run(&s, "POST", "/v2/fns", j(json!({"app_id": a, "name": "g"})))
        .await; // 400
    c.run(&s, "POST", "/v2/fns", big.clone()).await; // 413
    c.run(&s, "GET", &format!("/v2/fns?app_id={a}"), None).await;
    c.run(&s, "GET", "/v2/fns", None).await; // 400
    c.run(&s, "GET", &format!("/v2/fns/{fid}"), None).await;
    c.run(&s, "GET", "/v2/fns/NOPE", None).await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/fns/{fid}"),
        j(json!({"memory": 256})),
    )
    .await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/fns/{fid}"),
        j(json!({"timeout": 1000})),
    )
    .await; // 400
    c.run(&s, "PUT", &format!("/v2/fns/{fid}"), big.clone())
        .await; // 413
    c.run(&s, "PUT", "/v2/fns/NOPE", j(json!({}))).await; // 404
    // triggers
    let (_, t) = c
        .run(
            &s,
            "POST",
            "/v2/triggers",
            j(json!({"app_id": a, "fn_id": fid, "name": "t", "type": "http", "source": "/t"})),
        )
        .await;
    let tid = id(&t);
    c.run(
        &s,
        "POST",
        "/v2/triggers",
        j(json!({"app_id": a, "fn_id": fid, "name": "t2", "type": "http", "source": "/t"})),
    )
    .await; // 409
    c.run(
        &s,
        "POST",
        "/v2/triggers",
        j(json!({"app_id": a, "fn_id": "NOPE", "name": "t3", "type": "http", "source": "/u"})),
    )
    .await; // 404
    c.run(
        &s,
        "POST",
        "/v2/triggers",
        j(json!({"app_id": a, "fn_id": fid, "name": "t3", "type": "cron", "source": "/u"})),
    )
    .await; // 400
    c.run(&s, "POST", "/v2/triggers", big.clone()).await; // 413
    c.run(&s, "GET", &format!("/v2/triggers?app_id={a}"), None)
        .await;
    c.run(&s, "GET", "/v2/triggers", None).await; // 400
    c.run(&s, "GET", &format!("/v2/triggers/{tid}"), None).await;
    c.run(&s, "GET", "/v2/triggers/NOPE", None).await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/triggers/{tid}"),
        j(json!({"source": "/new"})),
    )
    .await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/triggers/{tid}"),
        j(json!({"source": "new"})),
    )
    .await; // 400
    c.run(&s, "PUT", &format!("/v2/triggers/{tid}"), big.clone())
        .await; // 413
    c.run(&s, "PUT", "/v2/triggers/NOPE", j(json!({}))).await; // 404
    let (_, t2) = c
        .run(
            &s,
            "POST",
            "/v2/triggers",
            j(json!({"app_id": a, "fn_id": fid, "name": "t9", "type": "http", "source": "/nine"})),
        )
        .await;
    c.run(
        &s,
        "PUT",
        &format!("/v2/triggers/{}", id(&t2)),
        j(json!({"source": "/new"})),
    )
    .await; // 409
    // calls and logs
    c.run(&s, "GET", &format!("/v2/fns/{fid}/calls"), None)
        .await;
    c.run(&s, "GET", &format!("/v2/fns/{fid}/calls?cursor=***"), None)
        .await; // 400
    c.run(&s, "GET", "/v2/fns/NOPE/calls", None).await;
    c.run(&s, "GET", &format!("/v2/fns/{fid}/calls/NOPE"), None)
        .await;
    c.run(&s, "GET", &format!("/v2/fns/{fid}/calls/NOPE/log"), None)
        .await;
    // A real call (the default-sh example, a cold shell function), then its
    // records and log.
    let example = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/default-sh"
    ))
    .unwrap();
    let (_, sh) = c
        .run(&s, "POST", "/v2/fns", j(json!({"app_id": a, "name": "sh", "format": "default", "image": format!("file://{}", example.display())})))
        .await;
    let sh = id(&sh);
    let (st, _) = c
        .run(&s, "POST", &format!("/invoke/{sh}"), Some("hello".into()))
        .await;
    assert_eq!(st, 200);
    let (st, _) = c
        .run(&s, "POST", &format!("/invoke/{sh}"), Some("fail".into()))
        .await;
    assert_eq!(st, 502);
    let mut calls = Value::Null;
    for _ in 0..200 {
        let (_, v) = c
            .run(&s, "GET", &format!("/v2/fns/{sh}/calls?per_page=1"), None)
            .await;
        let (_, all) = c.run(&s, "GET", &format!("/v2/fns/{sh}/calls"), None).await;
        let done = all["items"].as_array().map_or(0, |a| {
            a.iter().filter(|c| c["completed_at"].is_string()).count()
        });
        calls = all;
        if done == 2 && v.get("next_cursor").is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failed = calls["items"][0]["id"]
        .as_str()
        .expect("calls recorded")
        .to_owned();
    c.run(&s, "GET", &format!("/v2/fns/{sh}/calls/{failed}"), None)
        .await;
    // The log is written shortly after the call record (empty until then).
    for _ in 0..200 {
        let (st, v) = c
            .run_with(
                &s,
                "GET",
                &format!("/v2/fns/{sh}/calls/{failed}/log"),
                None,
                Some("application/json"),
            )
            .await;
        if st == 200 && v["log"]["log"].as_str().is_some_and(|l| !l.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (st, v) = c
        .run_with(
            &s,
            "GET",
            &format!("/v2/fns/{sh}/calls/{failed}/log"),
            None,
            Some("application/json"),
        )
        .await;
    assert_eq!(st, 200);
    assert!(
        v["log"]["log"]
            .as_str()
            .unwrap()
            .contains("failing as asked"),
        "{v}"
    );
    // invoke and triggers: lookups
    c.run(&s, "POST", "/invoke/NOPE", Some("x".into())).await;
    c.run(&s, "POST", &format!("/invoke/{fid}"), big.clone())
        .await; // 413
    for m in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        c.run(&s, m, "/t/nope", None).await;
        c.run(&s, m, "/t/a/no/such/source", None).await;
    }
    // deletes
    c.run(&s, "DELETE", &format!("/v2/triggers/{tid}"), None)
        .await;
    c.run(&s, "DELETE", &format!("/v2/triggers/{tid}"), None)
        .await;
    c.run(&s, "DELETE", &format!("/v2/fns/{fid}"), None).await;
    c.run(&s, "DELETE", &format!("/v2/fns/{fid}"), None).await;
    c.run(&s, "DELETE", &format!("/v2/apps/{a}"), None).await;
    c.run(&s, "DELETE", &format!("/v2/apps/{a}"), None).await;

    assert!(
        c.errs.is_empty(),
        "responses disagree with the document:\n{}",
        c.errs.join("\n")
    );
    // Every documented operation was exercised and served (not a 404/405 fallback).
    let mut documented = BTreeSet::new();
    for (p, item) in c.doc["paths"].as_object().unwrap() {
        for m in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            documented.insert((p.clone(), m.clone()));
        }
    }
    let missing: Vec<_> = documented.difference(&c.exercised).collect();
    assert!(
        missing.is_empty(),
        "documented but not exercised: {missing:?}"
    );
}

async fn undocumented_paths_and_methods_are_not_served(b: Backend) {
    let s = Srv::start(b).await;
    err(
        s.get("/v2/routes").await,
        404,
        "Path not found: GET /v2/routes",
    );
    err(
        s.call("PATCH", "/v2/apps", None).await,
        405,
        "Method not allowed: PATCH /v2/apps",
    );
    err(
        s.call("POST", "/v2/fns/x/calls", None).await,
        405,
        "Method not allowed: POST /v2/fns/x/calls",
    );
}

both!(
    responses_match_the_openapi_document,
    undocumented_paths_and_methods_are_not_served
);
