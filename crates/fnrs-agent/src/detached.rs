//! Detached calls: stored with their request, answered 202 at once, run
//! afterwards; ones a stopped server had accepted run at the next start (at
//! least once).

use std::sync::Arc;

use bytes::Bytes;
use fnrs_model::{App, Call, CallStatus, CallType, Error, Fn, PendingCall, Trigger};
use fnrs_protocol::{BoxBody, Format, empty_body, full_body};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body_util::BodyExt;

use crate::records::{finish_record, new_record_parts};
use crate::{Agent, CALL_ID_HEADER, CallError, InFlight, InvokeCall};

impl Agent {
    /// Detached: store the call and its request, answer 202, run it later.
    pub(crate) async fn detach(
        self: &Arc<Self>,
        call: InvokeCall,
        call_id: String,
    ) -> Result<Response<BoxBody>, CallError> {
        let limit = self.config.max_request_size;
        let body = match read_body(call.body, limit).await {
            Ok(b) => b,
            Err(e) => return Err(CallError::new(Some(&call_id), e)),
        };
        let record = new_record_parts(
            &call.app,
            &call.func,
            call.trigger.as_deref(),
            &call.method,
            &call.url,
            &call_id,
            CallType::Detached,
            CallStatus::Queued,
        );
        let pending = PendingCall {
            call_id: call_id.clone(),
            fn_id: call.func.id.clone(),
            trigger_id: call.trigger.as_ref().map(|t| t.id.clone()),
            method: call.method.to_string(),
            url: call.url.clone(),
            headers: call
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: body.to_vec(),
            attempts: 0,
        };
        self.store
            .insert_pending(&record, &pending)
            .await
            .map_err(|e| CallError::new(Some(&call_id), e))?;
        let agent = Arc::clone(self);
        let guard = InFlight::enter(self);
        tokio::spawn(async move {
            agent
                .run_detached(call.app, call.func, call.trigger, pending, record)
                .await;
            drop(guard);
        });
        let mut resp = Response::new(empty_body());
        *resp.status_mut() = http::StatusCode::ACCEPTED;
        if let Ok(v) = HeaderValue::from_str(&call_id) {
            resp.headers_mut()
                .insert(HeaderName::from_static(CALL_ID_HEADER), v);
        }
        Ok(resp)
    }

    async fn run_detached(
        self: Arc<Self>,
        app: Arc<App>,
        func: Arc<Fn>,
        trigger: Option<Arc<Trigger>>,
        pending: PendingCall,
        mut record: Call,
    ) {
        let format = match Format::parse(func.format.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                finish_record(&mut record, Some(e.status), Some(&e));
                self.recorder.call(record);
                let _ = self.store.remove_pending(&pending.call_id).await;
                return;
            }
        };
        if pending.attempts > 0 {
            record
                .stats
                .insert("attempts".into(), serde_json::json!(pending.attempts + 1));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &pending.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.append(k, v);
            }
        }
        let call = InvokeCall {
            app,
            func,
            trigger,
            method: pending.method.parse().unwrap_or(Method::POST),
            url: pending.url.clone(),
            headers,
            body: full_body(Bytes::from(pending.body)),
            detached: true,
        };
        record.status = CallStatus::Running;
        match self.run(call, format, record).await {
            Ok(resp) => {
                // The output is discarded, but the function must be able to send it.
                let _ = resp.into_body().collect().await;
            }
            Err(e) => {
                tracing::debug!(call_id = ?e.call_id, error = %e.error, "detached call failed")
            }
        }
        self.recorder.flush().await;
        if let Err(e) = self.store.remove_pending(&pending.call_id).await {
            tracing::warn!(call_id = %pending.call_id, error = %e, "removing pending call failed");
        }
    }

    /// Run the detached calls a previous server accepted but did not finish
    /// (at least once: a call cut short by a crash runs again).
    pub async fn resume_pending(self: &Arc<Self>) -> Result<usize, Error> {
        let pending = self.store.list_pending().await?;
        let n = pending.len();
        for p in pending {
            let found = async {
                let func = Arc::new(self.store.get_fn(&p.fn_id).await?);
                let app = Arc::new(self.store.get_app(&func.app_id).await?);
                let trigger = match &p.trigger_id {
                    Some(t) => Some(Arc::new(self.store.get_trigger(t).await?)),
                    None => None,
                };
                Ok::<_, Error>((app, func, trigger))
            }
            .await;
            let (app, func, trigger) = match found {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(call_id = %p.call_id, error = %e, "dropping pending call whose fn is gone");
                    let _ = self.store.remove_pending(&p.call_id).await;
                    continue;
                }
            };
            self.store.bump_pending_attempts(&p.call_id).await?;
            let record = match self.store.get_call(&p.fn_id, &p.call_id).await {
                Ok(c) => c,
                Err(_) => new_record_parts(
                    &app,
                    &func,
                    trigger.as_deref(),
                    &p.method.parse().unwrap_or(Method::POST),
                    &p.url,
                    &p.call_id,
                    CallType::Detached,
                    CallStatus::Queued,
                ),
            };
            let mut p = p;
            p.attempts += 1;
            let agent = Arc::clone(self);
            let guard = InFlight::enter(self);
            tracing::info!(call_id = %p.call_id, attempt = p.attempts + 1, "resuming detached call");
            tokio::spawn(async move {
                agent.run_detached(app, func, trigger, p, record).await;
                drop(guard);
            });
        }
        Ok(n)
    }
}

/// Read a whole body, at most `limit` bytes (0 = no limit).
async fn read_body(mut body: BoxBody, limit: u64) -> Result<Bytes, Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Error::new(400, "error reading request body"))?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if limit > 0 && buf.len() as u64 > limit {
                return Err(Error::too_large(buf.len() as u64, limit));
            }
        }
    }
    Ok(buf.freeze())
}
