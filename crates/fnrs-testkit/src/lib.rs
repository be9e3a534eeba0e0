//! Test helpers shared by fnrs's crates: a throw-away PostgreSQL server and
//! the `fnrs` binary started on 127.0.0.1:0.

pub mod pg;
pub mod server;
