//! Detached calls: stored with their request, answered 202 at once, run
//! afterwards; ones a stopped server had accepted run at the next start (at
//! least once).
//!
//! Bounded: a body is at most `FN_MAX_REQUEST_SIZE` (or
//! [`DETACHED_BODY_CAP`] without one) and held once; a call that finds the
//! server busy (503) tries again with backoff until
//! `FN_DETACHED_MAX_AGE_SECS`, then is recorded as failed with the reason.
//! At most [`CONCURRENCY`] detached calls run at once; the others wait
//! holding no body (it is read from the store when their turn comes), and
//! resumed ones are listed a page at a time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fnrs_model::{App, Call, CallStatus, CallType, DateTime, Error, Fn, PendingCall, Trigger};
use fnrs_protocol::{BoxBody, Format, empty_body, full_body};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body_util::BodyExt;

use crate::records::{finish_record, new_record_parts};
use crate::{Agent, CALL_ID_HEADER, CallError, InFlight, InvokeCall};

/// A detached call's body without `FN_MAX_REQUEST_SIZE`: it is stored whole.
pub const DETACHED_BODY_CAP: u64 = 64 << 20;

/// Detached calls running (or waiting for an instance) at once.
pub(crate) const CONCURRENCY: usize = 32;

/// Pending calls read per page when resuming.
const RESUME_PAGE: u32 = 256;

/// First and longest wait before a busy detached call tries again.
const BUSY_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

impl Agent {
    /// Detached: store the call and its request, answer 202, run it later.
    pub(crate) async fn detach(
        self: &Arc<Self>,
        call: InvokeCall,
        call_id: String,
    ) -> Result<Response<BoxBody>, CallError> {
        let limit = match self.config.max_request_size {
            0 => DETACHED_BODY_CAP,
            n => n,
        };
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
        let mut pending = PendingCall {
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
            body,
            attempts: 0,
        };
        self.store
            .insert_pending(&record, &pending)
            .await
            .map_err(|e| CallError::new(Some(&call_id), e))?;
        // With a free slot it runs with the body at hand; else it waits
        // without it and reads it back when its turn comes.
        let slot = Arc::clone(&self.detached_slots).try_acquire_owned().ok();
        let body = std::mem::take(&mut pending.body);
        let body = slot.is_some().then(|| Bytes::from(body));
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            let Some((slot, body)) = agent.detached_turn(&pending.call_id, slot, body).await else {
                return;
            };
            let guard = InFlight::enter(&agent);
            agent
                .run_detached(call.app, call.func, call.trigger, pending, body, record)
                .await;
            drop((guard, slot));
        });
        let mut resp = Response::new(empty_body());
        *resp.status_mut() = http::StatusCode::ACCEPTED;
        if let Ok(v) = HeaderValue::from_str(&call_id) {
            resp.headers_mut()
                .insert(HeaderName::from_static(CALL_ID_HEADER), v);
        }
        Ok(resp)
    }

    /// Run a stored call until it ran, failed for good or grew too old;
    /// then record it and remove it from the pending ones.
    async fn run_detached(
        self: Arc<Self>,
        app: Arc<App>,
        func: Arc<Fn>,
        trigger: Option<Arc<Trigger>>,
        pending: PendingCall,
        body: Bytes,
        mut record: Call,
    ) {
        let format = match Format::parse(func.format.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                self.record_failure(&mut record, &e);
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
        let method: Method = pending.method.parse().unwrap_or(Method::POST);
        let mut backoff = BUSY_BACKOFF.0;
        loop {
            let call = InvokeCall {
                app: Arc::clone(&app),
                func: Arc::clone(&func),
                trigger: trigger.clone(),
                method: method.clone(),
                url: pending.url.clone(),
                headers: headers.clone(),
                body: full_body(body.clone()),
                detached: true,
            };
            record.status = CallStatus::Running;
            match self.run_once(call, format, &mut record).await {
                Ok(resp) => {
                    // The output is discarded, but the function must be able
                    // to send it: read it, keeping none.
                    let mut out = resp.into_body();
                    while let Some(Ok(_)) = out.frame().await {}
                    break;
                }
                Err(e) if e.status == 503 => {
                    let age = DateTime::now().as_millis() - record.created_at.as_millis();
                    let max_age = self.config.detached_max_age.as_millis() as i64;
                    if self
                        .shutting_down
                        .load(std::sync::atomic::Ordering::Acquire)
                    {
                        // Still pending: the next start runs it.
                        return;
                    }
                    if age + backoff.as_millis() as i64 > max_age {
                        let why = Error::with_message(
                            503,
                            format!(
                                "{}: still busy after {} s (FN_DETACHED_MAX_AGE_SECS)",
                                e.message,
                                age / 1000
                            ),
                        );
                        self.record_failure(&mut record, &why);
                        break;
                    }
                    tracing::debug!(call_id = %pending.call_id, wait_ms = backoff.as_millis() as u64, "detached call found the server busy, trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BUSY_BACKOFF.1);
                }
                Err(e) => {
                    tracing::debug!(call_id = %pending.call_id, error = %e, "detached call failed");
                    self.record_failure(&mut record, &e);
                    break;
                }
            }
        }
        self.recorder.flush().await;
        if let Err(e) = self.store.remove_pending(&pending.call_id).await {
            tracing::warn!(call_id = %pending.call_id, error = %e, "removing pending call failed");
        }
    }

    /// Wait for a detached call's turn (a slot), and its body: `None` when
    /// the server stops first (the call stays pending) or the call is gone.
    async fn detached_turn(
        &self,
        call_id: &str,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
        body: Option<Bytes>,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, Bytes)> {
        let slot = match slot {
            Some(s) => s,
            None => Arc::clone(&self.detached_slots)
                .acquire_owned()
                .await
                .ok()?,
        };
        let body = match body {
            Some(b) => b,
            None => match self.store.get_pending(call_id).await {
                Ok(p) => Bytes::from(p.body),
                Err(e) => {
                    tracing::warn!(call_id, error = %e, "reading a pending call's body failed");
                    return None;
                }
            },
        };
        Some((slot, body))
    }

    fn record_failure(&self, record: &mut Call, e: &Error) {
        finish_record(record, Some(e.status), Some(e));
        self.recorder.call(record.clone());
    }

    /// Run the detached calls a previous server accepted but did not finish
    /// (at least once: a call cut short by a crash runs again). Returns how
    /// many there are; they run in the background.
    pub async fn resume_pending(self: &Arc<Self>) -> Result<usize, Error> {
        let mut ids = Vec::new();
        loop {
            let page = self
                .store
                .list_pending_page(ids.last().map(String::as_str), RESUME_PAGE)
                .await?;
            let full = page.len() as u32 == RESUME_PAGE;
            ids.extend(page.into_iter().map(|p| p.call_id));
            if !full {
                break;
            }
        }
        let n = ids.len();
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            for id in ids {
                // Closed at shutdown: the rest stay pending.
                let Ok(slot) = Arc::clone(&agent.detached_slots).acquire_owned().await else {
                    break;
                };
                let a = Arc::clone(&agent);
                tokio::spawn(async move {
                    if let Err(e) = a.resume_one(&id).await {
                        tracing::warn!(call_id = %id, error = %e, "resuming a detached call failed");
                    }
                    drop(slot);
                });
            }
        });
        Ok(n)
    }

    async fn resume_one(self: &Arc<Self>, call_id: &str) -> Result<(), Error> {
        let mut p = self.store.get_pending(call_id).await?;
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
                return self.store.remove_pending(&p.call_id).await;
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
        p.attempts += 1;
        tracing::info!(call_id = %p.call_id, attempt = p.attempts + 1, "resuming detached call");
        let body = Bytes::from(std::mem::take(&mut p.body));
        let _guard = InFlight::enter(self);
        Arc::clone(self)
            .run_detached(app, func, trigger, p, body, record)
            .await;
        Ok(())
    }
}

/// Read a whole body, at most `limit` bytes.
async fn read_body(mut body: BoxBody, limit: u64) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::request_body(&*e))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(Error::too_large((buf.len() + data.len()) as u64, limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}
