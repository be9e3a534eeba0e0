//! Cold calls (`default` format): one instance for one call, its request in
//! its environment and on stdin, its answer on stdout (contract §3.1).

use std::sync::Arc;

use fnrs_driver::{Instance, InstanceSpec};
use fnrs_model::{Call, DateTime, Error};
use fnrs_protocol::{BoxBody, Format};
use http::Response;
use tokio::time::Instant;

use crate::errors::{ERR_BUSY, driver_error};
use crate::instance::Owned;
use crate::logs::{LogTags, spawn_capture};
use crate::records::finish_record;
use crate::start::instance_env;
use crate::{Agent, InvokeCall};

impl Agent {
    pub(crate) async fn run_cold(
        self: &Arc<Self>,
        call: InvokeCall,
        record: &mut Call,
        queued: Instant,
    ) -> Result<Response<BoxBody>, Error> {
        let deadline = queued + self.config.max_queue_wait;
        let reservation = loop {
            let freed = self.capacity.released.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.capacity.try_reserve(call.func.memory) {
                Ok(r) => break r,
                Err(short) => {
                    if self.evict(short, None).await {
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(deadline) => return Err(ERR_BUSY),
            }
        };
        let driver = Arc::clone(self.driver_for(&call.func.image)?);
        let (app, func, req) = call.into_request(&record.id);
        let mut env = instance_env(&app, &func, Format::Default, None);
        env.extend(fnrs_protocol::cold_env(&req));
        let id = fnrs_model::new_id();
        let spec = InstanceSpec {
            id: id.clone(),
            app_id: app.id.clone(),
            fn_id: func.id.clone(),
            image: func.image.clone(),
            env,
            memory_mb: func.memory,
            iofs_dir: None,
            stdin: true,
            syslog_url: app.syslog_url.clone().filter(|u| !u.is_empty()),
        };
        record.started_at = Some(DateTime::now());
        let mut started = driver.start(spec).await.map_err(driver_error)?;
        let io = started.take_io();
        let inst: Arc<dyn Instance> = Arc::from(started);
        // Ended on every path below, a dropped call included.
        let owned = Owned::new(&self.live, id.clone(), inst, None, Some(reservation));
        let io = io.ok_or(Error::INTERNAL)?;
        let stdin = io.stdin.ok_or(Error::INTERNAL)?;
        let logs = spawn_capture(
            vec![io.stderr],
            LogTags {
                app_id: app.id.clone(),
                fn_id: func.id.clone(),
                instance_id: id,
            },
            self.config.max_log_size,
            !self.config.disable_debug_user_logs,
            Arc::clone(&self.recorder),
            Some(&record.id),
        );
        let exit = {
            let inst = Arc::clone(owned.inst());
            async move {
                let e = inst.wait().await;
                (e.code, e.oom_killed)
            }
        };
        let started_at = Instant::now();
        let result = fnrs_protocol::cold_call(stdin, io.stdout, exit, req, self.limits).await;
        // The log ends when the instance's streams do: a container's stderr
        // can trail its exit. Dropping the handle finishes the call's log at EOF.
        drop(logs);
        owned.destroy().await;
        metrics::histogram!("fn_call_duration_seconds").record(started_at.elapsed().as_secs_f64());
        match result {
            Ok(resp) => {
                finish_record(record, Some(resp.status().as_u16()), None);
                self.fn_calls.of(&record.fn_id).add("success");
                self.recorder.call(record.clone());
                Ok(resp)
            }
            Err(e) => Err(e.error),
        }
    }
}
