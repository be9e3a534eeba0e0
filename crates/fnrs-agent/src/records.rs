//! Call records: made when a call arrives, finished when it ends.

use fnrs_model::{App, Call, CallStatus, CallType, DateTime, Error, Fn, Trigger};
use http::Method;

use crate::InvokeCall;

pub(crate) fn new_record(
    call: &InvokeCall,
    call_id: &str,
    kind: CallType,
    status: CallStatus,
) -> Call {
    new_record_parts(
        &call.app,
        &call.func,
        call.trigger.as_deref(),
        &call.method,
        &call.url,
        call_id,
        kind,
        status,
    )
}

/// Move a call's record out (to the call's body, which finishes it), leaving
/// an empty one that allocates nothing: the caller no longer needs it.
pub(crate) fn take_record(record: &mut Call) -> Call {
    let empty = Call {
        id: String::new(),
        status: record.status,
        kind: record.kind,
        app_id: String::new(),
        fn_id: String::new(),
        trigger_id: None,
        method: String::new(),
        url: String::new(),
        created_at: record.created_at,
        started_at: None,
        completed_at: None,
        http_status: None,
        error: None,
        stats: serde_json::Map::new(),
    };
    std::mem::replace(record, empty)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn new_record_parts(
    app: &App,
    func: &Fn,
    trigger: Option<&Trigger>,
    method: &Method,
    url: &str,
    call_id: &str,
    kind: CallType,
    status: CallStatus,
) -> Call {
    Call {
        id: call_id.to_string(),
        status,
        kind,
        app_id: app.id.clone(),
        fn_id: func.id.clone(),
        trigger_id: trigger.map(|t| t.id.clone()),
        method: method.to_string(),
        url: url.to_string(),
        created_at: DateTime::now(),
        started_at: None,
        completed_at: None,
        http_status: None,
        error: None,
        stats: serde_json::Map::new(),
    }
}

pub(crate) fn finish_record(record: &mut Call, status: Option<u16>, err: Option<&Error>) {
    record.completed_at = Some(DateTime::now());
    record.http_status = status.or(record.http_status);
    match err {
        None => record.status = CallStatus::Success,
        Some(e) => {
            record.status = if e.status == 504 {
                CallStatus::Timeout
            } else {
                CallStatus::Error
            };
            record.error = Some(e.message.to_string());
            record.http_status = Some(e.status);
        }
    }
}

/// The `outcome` label of `fn_calls_total`.
pub(crate) fn outcome_label(err: Option<&Error>) -> &'static str {
    match err {
        None => "success",
        Some(e) if e.status == 504 => "timeout",
        Some(e) if e.status == 503 => "busy",
        Some(e) if e.status < 500 => "rejected",
        Some(_) => "error",
    }
}
