//! Fn's data model as fnrs stores and serves it: apps, fns, triggers and call
//! records, their ids and timestamps, and the errors Fn answers with.
//!
//! JSON shapes follow Fn's `api/models` (field names, which fields are omitted
//! when empty). Validation of client input lives in [`validate`].

mod error;
mod id;
pub mod input;
mod time;
mod types;
pub mod validate;

pub use error::Error;

/// `Fn-Call-Id`: the header naming a call, on its answer and on the request
/// a function gets (lower case, as `http` spells header names).
pub const CALL_ID_HEADER: &str = "fn-call-id";
pub use id::{IdGenerator, new_id};
pub use time::DateTime;
pub use types::*;
