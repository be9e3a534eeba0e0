//! Integration tests of the function protocol against real function
//! processes and misbehaving ones.

mod common;
mod hostile_stream;
mod real_fdks;
mod rust_fdk;
