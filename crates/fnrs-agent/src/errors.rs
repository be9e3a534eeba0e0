//! The agent's answers for calls it cannot run, and how driver and
//! instance failures become Fn's errors.

use std::sync::Arc;
use std::time::Duration;

use fnrs_driver::{DriverError, Instance};
use fnrs_model::Error;

pub(crate) use fnrs_protocol::errors::CONTAINER_INIT_FAIL as ERR_INIT_FAIL;

pub(crate) const ERR_BUSY: Error = Error::new(503, "Timed out - server too busy");
pub(crate) const ERR_TOO_BIG: Error = Error::new(400, "Requested CPU/Memory cannot be allocated");
pub(crate) const ERR_INIT_TIMEOUT: Error = Error::new(
    504,
    "Container initialization timed out, please ensure you are using the latest fdk and check the logs",
);

/// If a failed instance died of out-of-memory (it usually has just exited
/// when its connection broke), Fn's out-of-memory error.
pub(crate) async fn oom_error(inst: &Arc<dyn Instance>) -> Option<Error> {
    let exit = tokio::time::timeout(Duration::from_millis(500), inst.wait())
        .await
        .ok()?;
    exit.oom_killed
        .then_some(fnrs_protocol::errors::OUT_OF_MEMORY)
}

pub(crate) fn driver_error(e: DriverError) -> Error {
    match e {
        DriverError::BadImage(m) => Error::with_message(400, m),
        DriverError::Pull { status, message } => Error::with_message(status, message),
        DriverError::PullTimeout => Error::new(504, "Image pull timed out"),
        DriverError::Unavailable(m) => Error::with_message(503, m),
        DriverError::Syslog(m) => {
            tracing::warn!(error = %m, "the app's syslog cannot be used");
            Error::new(500, "Syslog Unavailable")
        }
        DriverError::Internal(m) => {
            tracing::error!(error = %m, "driver failed");
            Error::INTERNAL
        }
    }
}
