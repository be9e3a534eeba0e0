//! The `cloudevent` format: CloudEvents 0.1 in and out (contract §3.4).

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::gojson;
use crate::json::write_protocol;

/// Why a request could not become a CloudEvent (answered 400).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("Invalid CloudEvent input: {0}")]
    BadEvent(String),
    #[error("Invalid json body for a cloudevent function: {0}")]
    BadBody(String),
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, InputError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(InputError::BadEvent(format!(
            "{k} must be a string, not {other}"
        ))),
    }
}

fn event_time(m: &Map<String, Value>) -> Result<String, InputError> {
    let t = str_field(m, "eventTime")?;
    if t.is_empty() {
        return Ok(ZERO_TIME.to_owned());
    }
    let ts: jiff::Timestamp = t
        .parse()
        .map_err(|_| InputError::BadEvent(format!("eventTime {t:?} is not RFC 3339")))?;
    // Go re-encodes time.Time as RFC 3339 with nanoseconds trimmed.
    Ok(ts.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
}

/// One line of `cloudevent` input.
///
/// `own_event`: the client sent `application/cloudevents+json`, `body` is its
/// event; otherwise an event is built from the request (`data` = the body
/// parsed as JSON, omitted when empty).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_request(
    out: &mut Vec<u8>,
    call_id: &str,
    deadline: &str,
    body: &[u8],
    own_event: bool,
    method: &http::Method,
    url: &str,
    headers: &HeaderMap,
) -> Result<(), InputError> {
    let empty = Map::new();
    let (ev, data): (&Map<String, Value>, Option<Value>);
    let parsed: Value;
    if own_event {
        parsed = serde_json::from_slice(body).map_err(|e| InputError::BadEvent(e.to_string()))?;
        let Value::Object(m) = &parsed else {
            return Err(InputError::BadEvent("not a JSON object".into()));
        };
        ev = m;
        data = m.get("data").filter(|d| !d.is_null()).cloned();
    } else {
        ev = &empty;
        data = if body.is_empty() {
            None
        } else {
            let mut it = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => return Err(InputError::BadBody(e.to_string())),
                None => None,
            }
        };
    }
    let (version, id, source, etype, ctype) = if own_event {
        (
            str_field(ev, "cloudEventsVersion")?.to_owned(),
            str_field(ev, "eventID")?.to_owned(),
            str_field(ev, "source")?.to_owned(),
            str_field(ev, "eventType")?.to_owned(),
            str_field(ev, "contentType")?.to_owned(),
        )
    } else {
        (
            "0.1".to_owned(),
            call_id.to_owned(),
            url.to_owned(),
            "http".to_owned(),
            String::from_utf8_lossy(crate::json::content_type(headers)).into_owned(),
        )
    };
    out.extend_from_slice(b"{\"cloudEventsVersion\":");
    gojson::write_str(out, &version);
    out.extend_from_slice(b",\"eventID\":");
    gojson::write_str(out, &id);
    out.extend_from_slice(b",\"source\":");
    gojson::write_str(out, &source);
    out.extend_from_slice(b",\"eventType\":");
    gojson::write_str(out, &etype);
    out.extend_from_slice(b",\"eventTypeVersion\":");
    gojson::write_str(out, str_field(ev, "eventTypeVersion")?);
    out.extend_from_slice(b",\"eventTime\":");
    gojson::write_str(out, &event_time(ev)?);
    out.extend_from_slice(b",\"schemaURL\":");
    gojson::write_str(out, str_field(ev, "schemaURL")?);
    out.extend_from_slice(b",\"contentType\":");
    gojson::write_str(out, &ctype);
    // extensions: the client's, with deadline and protocol set; keys sorted.
    let mut ext: Vec<(&str, Option<&Value>)> = Vec::new();
    match ev.get("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k != "deadline" && k != "protocol" {
                    ext.push((k.as_str(), Some(v)));
                }
            }
        }
        Some(_) => return Err(InputError::BadEvent("extensions must be an object".into())),
    }
    ext.push(("deadline", None));
    ext.push(("protocol", None));
    ext.sort_by(|a, b| a.0.cmp(b.0));
    out.extend_from_slice(b",\"extensions\":{");
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gojson::write_str(out, k);
        out.push(b':');
        match (*k, v) {
            (_, Some(v)) => gojson::write_value(out, v),
            ("deadline", None) => gojson::write_str(out, deadline),
            _ => write_protocol(out, method, url, headers),
        }
    }
    out.push(b'}');
    if let Some(d) = &data {
        out.extend_from_slice(b",\"data\":");
        gojson::write_value(out, d);
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// A function's `cloudevent` reply, checked and ready to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct CloudEventReply {
    /// `extensions.protocol.status_code`, if given.
    pub status: Option<u16>,
    /// `extensions.protocol.headers`, in order.
    pub headers: Vec<(String, String)>,
    /// The event's `contentType`, overriding `Content-Type` when not empty.
    pub content_type: String,
    /// The response body.
    pub body: Vec<u8>,
}

/// Why a reply event is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Not JSON at all (the instance is out of step).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not a usable event.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ReplyError {
    fn from(s: String) -> Self {
        ReplyError::Invalid(s)
    }
}

impl From<&str> for ReplyError {
    fn from(s: &str) -> Self {
        ReplyError::Invalid(s.to_owned())
    }
}

/// Check a reply event and work out the answer. `own_event`: the client sent
/// a CloudEvent, so the answer is the whole reply event.
pub fn parse_cloudevent_reply(
    bytes: &[u8],
    own_event: bool,
) -> Result<CloudEventReply, ReplyError> {
    let v: Value = serde_json::from_slice(bytes)?;
    let Value::Object(ev) = &v else {
        return Err("reply is not a JSON object".into());
    };
    let err = |e: InputError| ReplyError::Invalid(e.to_string());
    for k in [
        "cloudEventsVersion",
        "eventID",
        "source",
        "eventType",
        "eventTypeVersion",
        "schemaURL",
        "contentType",
    ] {
        str_field(ev, k).map_err(err)?;
    }
    let time = event_time(ev).map_err(err)?;
    let content_type = str_field(ev, "contentType").map_err(err)?.to_owned();
    let mut status = None;
    let mut headers = Vec::new();
    let ext = match ev.get("extensions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err("extensions is not an object".into()),
    };
    if let Some(p) = ext.and_then(|e| e.get("protocol")).filter(|p| !p.is_null()) {
        let Value::Object(p) = p else {
            return Err("extensions.protocol is not an object".into());
        };
        match p.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) => {
                for (k, vs) in h {
                    let Value::Array(vs) = vs else {
                        return Err("Invalid JSON for protocol headers, not an array of strings for header value".into());
                    };
                    for x in vs {
                        let Value::String(s) = x else {
                            return Err("Invalid JSON for protocol headers, not an array of strings for header value".into());
                        };
                        headers.push((k.clone(), s.clone()));
                    }
                }
            }
            Some(_) => return Err("Invalid JSON for protocol headers, not a map".into()),
        }
        match p.get("status_code") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                let code = n
                    .as_f64()
                    .filter(|f| (100.0..1000.0).contains(f))
                    .map(|f| f as u16)
                    .ok_or_else(|| format!("Invalid status_code in protocol extension: {n}"))?;
                status = Some(code);
            }
            Some(other) => {
                return Err(format!(
                    "Invalid status_code type in protocol extension, must be an integer: {other}"
                )
                .into());
            }
        }
    }
    let body = if own_event {
        let mut out = Vec::with_capacity(bytes.len() + 64);
        write_event(&mut out, ev, &time);
        out.push(b'\n');
        out
    } else {
        match content_type.as_str() {
            "application/json" => {
                let mut out = Vec::new();
                gojson::write_value(&mut out, ev.get("data").unwrap_or(&Value::Null));
                out
            }
            "text/plain" => match ev.get("data") {
                Some(Value::String(s)) => s.clone().into_bytes(),
                _ => return Err("data of a text/plain event is not a string".into()),
            },
            other => return Err(format!("Unknown content type: {other:?}").into()),
        }
    };
    Ok(CloudEventReply {
        status,
        headers,
        content_type,
        body,
    })
}

/// Re-encode an event as Go's CloudEvent struct marshals it.
fn write_event(out: &mut Vec<u8>, ev: &Map<String, Value>, time: &str) {
    let s = |k: &str| match ev.get(k) {
        Some(Value::String(s)) => s.as_str(),
        _ => "",
    };
    out.extend_from_slice(b"{\"cloudEventsVersion\":");
    gojson::write_str(out, s("cloudEventsVersion"));
    for k in ["eventID", "source", "eventType", "eventTypeVersion"] {
        out.extend_from_slice(format!(",\"{k}\":").as_bytes());
        gojson::write_str(out, s(k));
    }
    out.extend_from_slice(b",\"eventTime\":");
    gojson::write_str(out, time);
    for k in ["schemaURL", "contentType"] {
        out.extend_from_slice(format!(",\"{k}\":").as_bytes());
        gojson::write_str(out, s(k));
    }
    out.extend_from_slice(b",\"extensions\":");
    gojson::write_value(out, ev.get("extensions").unwrap_or(&Value::Null));
    if let Some(d) = ev.get("data").filter(|d| !d.is_null()) {
        out.extend_from_slice(b",\"data\":");
        gojson::write_value(out, d);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        h
    }

    #[test]
    fn request_like_seed_server() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "CALL",
            "2026-11-25T21:06:36.365Z",
            br#"{"n":1.50,"hello":"world"} trailing"#,
            false,
            &http::Method::POST,
            "http://h/invoke/f?q=1&x=2",
            &req_headers(),
        )
        .unwrap();
        let expected = r#"{"cloudEventsVersion":"0.1","eventID":"CALL","source":"http://h/invoke/f?q=1\u0026x=2","eventType":"http","eventTypeVersion":"","eventTime":"0001-01-01T00:00:00Z","schemaURL":"","contentType":"application/json","extensions":{"deadline":"2026-11-25T21:06:36.365Z","protocol":{"type":"http","method":"POST","request_url":"http://h/invoke/f?q=1\u0026x=2","headers":{"Content-Type":["application/json"],"X-A":["1"]}}},"data":{"hello":"world","n":1.5}}"#;
        assert_eq!(String::from_utf8(out).unwrap(), format!("{expected}\n"));

        let mut out = Vec::new();
        write_request(
            &mut out,
            "C",
            "D",
            b"",
            false,
            &http::Method::GET,
            "u",
            &HeaderMap::new(),
        )
        .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("\"data\""));
        let mut out = Vec::new();
        assert!(matches!(
            write_request(
                &mut out,
                "C",
                "D",
                b"not json",
                false,
                &http::Method::POST,
                "u",
                &HeaderMap::new()
            ),
            Err(InputError::BadBody(_))
        ));
    }

    #[test]
    fn own_event_passes_through_with_extensions() {
        let ev = br#"{"cloudEventsVersion":"0.1","eventID":"E1","source":"s","eventType":"t","contentType":"text/plain","extensions":{"mine":1,"deadline":"old"},"data":"hi","extra":true}"#;
        let mut out = Vec::new();
        write_request(
            &mut out,
            "C",
            "D",
            ev,
            true,
            &http::Method::POST,
            "u",
            &HeaderMap::new(),
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(r#"{"cloudEventsVersion":"0.1","eventID":"E1","source":"s","eventType":"t","eventTypeVersion":"","eventTime":"0001-01-01T00:00:00Z","schemaURL":"","contentType":"text/plain","extensions":{"deadline":"D","mine":1,"protocol":{"type":"http""#), "{s}");
        assert!(s.ends_with("\"data\":\"hi\"}\n"), "{s}");
        assert!(!s.contains("extra"));
    }

    #[test]
    fn replies() {
        let r = parse_cloudevent_reply(br#"{"contentType":"application/json","data":{"b":1.0,"a":"x"},"extensions":{"protocol":{"status_code":418,"headers":{"X-A":["1"]}}}}"#, false).unwrap();
        assert_eq!(r.status, Some(418));
        assert_eq!(r.body, br#"{"a":"x","b":1}"#);
        assert_eq!(r.headers, [("X-A".to_owned(), "1".to_owned())]);
        let r = parse_cloudevent_reply(br#"{"contentType":"text/plain","data":"plain"}"#, false)
            .unwrap();
        assert_eq!(r.body, b"plain");
        assert!(
            parse_cloudevent_reply(br#"{"data":"x"}"#, false)
                .unwrap_err()
                .to_string()
                .contains("Unknown content type")
        );
        assert!(
            parse_cloudevent_reply(br#"{"contentType":"text/plain","data":1}"#, false).is_err()
        );
        assert!(parse_cloudevent_reply(br#"{"contentType":"text/plain","data":"x","extensions":{"protocol":{"status_code":"x"}}}"#, false).is_err());
        let r =
            parse_cloudevent_reply(br#"{"eventID":"E","contentType":"weird","data":[1]}"#, true)
                .unwrap();
        assert!(
            String::from_utf8(r.body)
                .unwrap()
                .starts_with(r#"{"cloudEventsVersion":"","eventID":"E""#)
        );
    }
}
