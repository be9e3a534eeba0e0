//! The agent's settings, parsed once by the binary (`FN_*` variables).

use std::path::PathBuf;
use std::time::Duration;

/// The default of `FN_HOT_POLL_MSECS`, in ms.
pub const DEFAULT_HOT_POLL_MSECS: u64 = 20;

/// Settings of the agent. Defaults follow Fn where Fn has the setting.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `FN_HOT_START_TIMEOUT_MSECS` (5000): time for an instance to create
    /// `lsnr.sock`, counted from its start.
    pub hot_start_timeout: Duration,
    /// `FN_MAX_QUEUE_WAIT_MSECS` (new; 30000): how long a call may wait for an
    /// instance or for memory before it is answered 503.
    pub max_queue_wait: Duration,
    /// `FN_HOT_POLL_MSECS` (Fn's name; 20 here, Fn 200): how long a call
    /// waits for a busy fn's instance to free up before it launches a start.
    pub hot_poll: Duration,
    /// `FN_MAX_TOTAL_MEMORY_BYTES`: cap on memory for instances (detected
    /// otherwise).
    pub max_total_memory: Option<u64>,
    /// `FN_IOFS_PATH`: where iofs directories are made (the binary's
    /// default: `/run/fnrs/iofs` as root, else the OS temp dir).
    pub iofs_path: PathBuf,
    /// `FN_IOFS_TMPFS`/`FN_IOFS_OPTS`: mount options of a tmpfs mounted on
    /// each instance's iofs directory, bounding what a function can write
    /// there (`None`: plain directories).
    pub iofs_tmpfs: Option<String>,
    /// Refuse to start when that tmpfs cannot be mounted (else warn and use
    /// plain directories).
    pub iofs_tmpfs_required: bool,
    /// `FN_MAX_RESPONSE_SIZE` (0 = unlimited): function response body bytes.
    pub max_response_size: u64,
    /// `FN_MAX_HDR_RESPONSE_SIZE` (0 = 10 MiB): function response header bytes.
    pub max_hdr_response_size: usize,
    /// `FN_MAX_LOG_SIZE_BYTES` (1 MiB): log kept per call.
    pub max_log_size: usize,
    /// `FN_DISABLE_DEBUG_USER_LOGS` (false): don't echo function logs into the
    /// server log at debug level.
    pub disable_debug_user_logs: bool,
    /// `FN_MAX_CALLS_PER_FN` (new; 1000): call records kept per fn.
    pub max_calls_per_fn: u32,
    /// `FN_DETACHED_MAX_AGE_SECS` (new; 3600): how long a detached call that
    /// finds the server busy keeps trying before it is recorded as failed.
    pub detached_max_age: Duration,
    /// `FN_RECORDER_BACKLOG_BYTES` (new; 64 MiB): records and logs waiting
    /// for the store; beyond it logs, then records, are dropped (counted).
    pub recorder_backlog_bytes: usize,
    /// `FN_MAX_REQUEST_SIZE` (0 = unlimited): also bounds a detached call's
    /// body, which is stored.
    pub max_request_size: u64,
    /// This server run's id (labels, cgroup and iofs names); made up when
    /// `None`.
    pub server_id: Option<String>,
    /// Where running servers keep their lock files (machine-wide).
    pub lock_dir: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            hot_start_timeout: Duration::from_millis(5000),
            max_queue_wait: Duration::from_millis(30_000),
            hot_poll: Duration::from_millis(DEFAULT_HOT_POLL_MSECS),
            max_total_memory: None,
            iofs_path: std::env::temp_dir(),
            iofs_tmpfs: None,
            iofs_tmpfs_required: false,
            max_response_size: 0,
            max_hdr_response_size: 0,
            max_log_size: 1024 * 1024,
            disable_debug_user_logs: false,
            max_calls_per_fn: 1000,
            max_request_size: 0,
            detached_max_age: Duration::from_secs(3600),
            recorder_backlog_bytes: crate::recorder::DEFAULT_BACKLOG_BYTES,
            server_id: None,
            lock_dir: crate::iofs::default_lock_dir(),
        }
    }
}
