//! End to end through the `fnrs` binary: real processes in the bubblewrap
//! sandbox, the real Python and Node FDKs, every format, pooling, timeouts,
//! crashes, OOM, capacity, detached calls across a crash, logs, shutdown, and
//! nothing left behind.
//!
//! Needs the examples prepared (`scripts/setup-examples.sh`) and
//! `FNRS_TEST_PY_VENV` (a venv of Debian's python3 with `fdk`), as
//! `scripts/test.sh` does.

mod common;

mod agent_settings;
mod attack_files;
mod attack_net;
mod attack_sandbox;
mod auth;
mod crashed;
mod docker;
mod drivers;
mod formats;
mod hostile;
mod lifecycle;
mod settings;
mod uploads;
