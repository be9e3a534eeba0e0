//! A small Rust FDK for the http-stream contract
