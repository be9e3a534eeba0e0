//! The HTTP API: Fn's v2 management API, invoke and triggers, calls and logs, metrics and health
