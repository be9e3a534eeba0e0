//! The `fnrs` binary started on 127.0.0.1:0 for black-box tests.
