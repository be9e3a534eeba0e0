//! Integration tests of the function protocol against real function
//! processes and misbehaving ones.

mod common;
mod hostile_stdio;
mod hostile_stream;
mod legacy;
mod real_fdks;
mod rust_fdk;
