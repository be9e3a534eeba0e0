//! The boundary between the agent and the things that run functions.
//!
//! A [`Driver`] turns an [`InstanceSpec`] into a running [`Instance`]: a
//! process in a sandbox, or a container. The agent owns everything that is the
//! same for every driver: the iofs directory and the wait for `lsnr.sock`, the
//! function protocol, log capture, pooling and capacity. A driver only starts,
//! watches and ends instances.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the iofs directory appears inside every instance.
pub const IOFS_MOUNT: &str = "/tmp/iofs";

/// What to start.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// A fresh 26-character id, unique per instance (container name, cgroup name).
    pub id: String,
    pub app_id: String,
    pub fn_id: String,
    /// The fn's `image`: `file:///abs/dir` for the process driver, an image
    /// reference for Docker.
    pub image: String,
    /// Environment, complete (the agent builds it per contract §2.1).
    pub env: Vec<(String, String)>,
    /// Memory limit in MiB (no swap beyond it).
    pub memory_mb: u64,
    /// Host path of the iofs directory to mount at [`IOFS_MOUNT`], for
    /// http-stream instances. The agent creates and removes it.
    pub iofs_dir: Option<PathBuf>,
    /// Whether the agent will write to the instance's stdin (stdin/stdout
    /// formats). Without it stdin is closed / `/dev/null`.
    pub stdin: bool,
    /// The app's `syslog_url` (`udp://`, `tcp://`, `unix://`, `unixgram://`,
    /// `tcp+tls://`): where a driver that can also sends the instance's
    /// output (Docker's syslog log driver, as Fn does).
    pub syslog_url: Option<String>,
}

/// The instance's standard streams, taken once by the agent.
pub struct InstanceIo {
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
}

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number when killed by a signal (as a shell
    /// and Docker report it: SIGKILL → 137).
    pub code: i32,
    /// The kernel's out-of-memory killer ended it (cgroup OOM counter, or
    /// Docker's `OOMKilled`).
    pub oom_killed: bool,
}

/// A running function instance.
#[async_trait]
pub trait Instance: Send + Sync {
    /// The instance id of its [`InstanceSpec`].
    fn id(&self) -> &str;
    /// The standard streams; `None` after the first call.
    fn take_io(&mut self) -> Option<InstanceIo>;
    /// Resolves when the instance has exited; may be awaited from several
    /// tasks and after exit (then returns at once).
    async fn wait(&self) -> ExitInfo;
    /// End the instance now (SIGKILL / force remove) and release what the
    /// driver holds for it (cgroup, container). Idempotent. Returns when
    /// everything is gone.
    async fn destroy(&self);
}

/// Whose fault a failure is, for status codes and retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The fn's image is not usable (400): bad `file://` path, not allowed root,
    /// image with a VOLUME…
    #[error("{0}")]
    BadImage(String),
    /// The image does not exist or may not be pulled; status is the
    /// registry's (typically 404), message Fn's "Failed to pull image …".
    #[error("{message}")]
    Pull { status: u16, message: String },
    /// Pulling took longer than allowed (504 "Image pull timed out").
    #[error("Image pull timed out")]
    PullTimeout,
    /// The driver cannot work at all right now (engine down, sandbox missing).
    #[error("{0}")]
    Unavailable(String),
    /// The app's syslog could not be used (500 "Syslog Unavailable").
    #[error("syslog unavailable: {0}")]
    Syslog(String),
    /// Anything else on the system side (500).
    #[error("{0}")]
    Internal(String),
}

/// Something that runs functions.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Short name: `process`, `docker`.
    fn name(&self) -> &'static str;
    /// Where the iofs directory `host_dir` appears inside an instance, for
    /// `FN_LISTENER=unix:<this>/lsnr.sock`. [`IOFS_MOUNT`] for every driver that
    /// mounts it there; a driver that cannot remap paths (the process driver
    /// without a sandbox) returns `host_dir` itself.
    fn iofs_mount(&self, host_dir: &Path) -> String {
        let _ = host_dir;
        IOFS_MOUNT.to_string()
    }
    /// Whether this driver runs the given image reference.
    fn handles(&self, image: &str) -> bool;
    /// Check an image when a fn is created or updated (cheap, no start).
    async fn check_image(&self, image: &str) -> Result<(), DriverError>;
    /// Start an instance. On error nothing is left behind.
    async fn start(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, DriverError>;
    /// Remove whatever an earlier, crashed server left (processes, cgroups,
    /// containers). Called once at start.
    async fn cleanup_leftovers(&self) -> Result<(), DriverError>;
    /// State for `/health`: `{"ok": bool, …details}`.
    async fn health(&self) -> serde_json::Value;
    /// Stop background work (sandboxes made ahead of time) at shutdown,
    /// after every instance ended and before the server removes what it
    /// owns.
    async fn shutdown(&self) {}
}
