//! Test helpers: the fnrs binary on 127.0.0.1:0, temp stores, throw-away PostgreSQL
