//! The Docker driver: functions in containers on a Docker engine, with Fn's
//! container spec (contract §6).
//!
//! A fn whose `image` is an image reference (anything but `file://…`) runs
//! as a container on the engine at [`ENV_DOCKER_HOST`] (default
//! `unix:///var/run/docker.sock`). The server starts without an engine; then
//! every start fails with [`DriverError::Unavailable`] and
//! [`Driver::health`] says `"ok": false`.
//!
//! - **Image**: inspected locally (trusted for [`IMAGE_CHECK_TTL`] after a
//!   check; a create that finds it gone checks again); pulled when missing, with credentials
//!   from [`ENV_DOCKER_AUTH`] or `~/.docker/config.json` (an entry matches the
//!   image's registry or a parent domain of it; images without a registry use
//!   Docker Hub's entry); concurrent pulls of one image are coalesced; a pull
//!   longer than [`ENV_HOT_PULL_TIMEOUT_MSECS`] is [`DriverError::PullTimeout`];
//!   a refused pull is [`DriverError::Pull`] with the registry's 4xx (else
//!   502) and "Failed to pull image '<img>': …"; an image with a `VOLUME` is
//!   refused (400) unless [`ENV_IMAGE_ENABLE_VOLUME`].
//! - **Container**: named after the instance id, the image's own
//!   entrypoint and cmd; docker-init as PID 1; read-only rootfs
//!   ([`ENV_DISABLE_READONLY_ROOTFS`]) with a tmpfs `/tmp`; memory = memory +
//!   swap = the fn's memory, swappiness 0; pids limit ([`ENV_MAX_PIDS`]); Fn's
//!   ulimits; the iofs directory bound at `/tmp/iofs` (host path translated
//!   with [`ENV_IOFS_PATH`] → [`ENV_IOFS_DOCKER_PATH`] when the server runs in
//!   a container); uid/gid 1000, all capabilities dropped and no new
//!   privileges ([`ENV_DISABLE_UNPRIVILEGED_CONTAINERS`]); one of
//!   [`ENV_DOCKER_NETWORKS`] (least used); the instance's env; log driver
//!   `none`; labels [`LABEL_SERVER`] (the server id), [`LABEL_APP`],
//!   [`LABEL_FN`].
//! - **Streams**: attached before start; stdout and stderr demultiplexed into
//!   two readers; stdin attached only when the spec asks for it (closing it
//!   closes the container's stdin).
//! - **End**: `wait` gives the exit code (137 after a kill) and inspect's
//!   `OOMKilled`; `destroy` force-removes the container with its volumes.
//! - **Leftovers**: [`Driver::cleanup_leftovers`] removes containers labelled
//!   by a server that is not running any more ([`DockerDriverConfig::is_live`]).
//! - **Not done**: pausing idle containers ([`ENV_FREEZE_IDLE_MSECS`], off by
//!   default here: Fn's pause costs ~10 ms on the next call), the syslog log
//!   driver of apps with `syslog_url`, the image cleaner, prefork pools.

mod reference;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use fnrs_driver::{Driver, DriverError, ExitInfo, IOFS_MOUNT, Instance, InstanceIo, InstanceSpec};
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

pub use reference::{ImageRef, RegistryAuth};

/// `DOCKER_HOST`: the engine's address (`unix:///path`, `tcp://host:port`,
/// `http://…`). Default `unix:///var/run/docker.sock`.
pub const ENV_DOCKER_HOST: &str = "DOCKER_HOST";
/// `FN_DOCKER_AUTH`: registry credentials as Docker config JSON
/// (`{"auths":{"reg.example.com":{"auth":"base64(user:pass)"}}}`). Default:
/// `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`).
pub const ENV_DOCKER_AUTH: &str = "FN_DOCKER_AUTH";
/// `FN_DOCKER_NETWORKS`: whitespace-separated networks; each container
/// joins the least used one. Default: the engine's default bridge.
pub const ENV_DOCKER_NETWORKS: &str = "FN_DOCKER_NETWORKS";
/// `FN_DISABLE_READONLY_ROOTFS`: `true` gives containers a writable root
/// file system (default false).
pub const ENV_DISABLE_READONLY_ROOTFS: &str = "FN_DISABLE_READONLY_ROOTFS";
/// `FN_DISABLE_UNPRIVILEGED_CONTAINERS`: `true` runs containers as the
/// image's user with Docker's default capabilities (default false: uid/gid
/// 1000, no capabilities, no new privileges).
pub const ENV_DISABLE_UNPRIVILEGED_CONTAINERS: &str = "FN_DISABLE_UNPRIVILEGED_CONTAINERS";
/// `FN_MAX_PIDS`: pids limit of a container (default 50, as Fn).
pub const ENV_MAX_PIDS: &str = "FN_MAX_PIDS";
/// `FN_MAX_OPEN_FILES`: `nofile` ulimit (default 350).
pub const ENV_MAX_OPEN_FILES: &str = "FN_MAX_OPEN_FILES";
/// `FN_MAX_LOCKED_MEMORY`: `memlock` ulimit in bytes (default 65536).
pub const ENV_MAX_LOCKED_MEMORY: &str = "FN_MAX_LOCKED_MEMORY";
/// `FN_MAX_PENDING_SIGNALS`: `sigpending` ulimit (default 5000).
pub const ENV_MAX_PENDING_SIGNALS: &str = "FN_MAX_PENDING_SIGNALS";
/// `FN_MAX_MESSAGE_QUEUE`: `msgqueue` ulimit in bytes (default 819200).
pub const ENV_MAX_MESSAGE_QUEUE: &str = "FN_MAX_MESSAGE_QUEUE";
/// `FN_MAX_TMPFS_INODES`: `nr_inodes` of the `/tmp` tmpfs (default 0: the
/// engine's default).
pub const ENV_MAX_TMPFS_INODES: &str = "FN_MAX_TMPFS_INODES";
/// `FN_MAX_FS_SIZE_MB`: the engine's `size` storage option per container, in
/// MiB (default 0: none; needs a storage driver that supports it).
pub const ENV_MAX_FS_SIZE_MB: &str = "FN_MAX_FS_SIZE_MB";
/// `FN_IOFS_PATH`: where the agent makes iofs directories (the agent's
/// view). Only used here with [`ENV_IOFS_DOCKER_PATH`].
pub const ENV_IOFS_PATH: &str = "FN_IOFS_PATH";
/// `FN_IOFS_DOCKER_PATH`: the same directory as the Docker engine sees it
/// (a host path or a named volume), for a server that runs in a container.
pub const ENV_IOFS_DOCKER_PATH: &str = "FN_IOFS_DOCKER_PATH";
/// `FN_HOT_PULL_TIMEOUT_MSECS`: longest image pull (default 600000 = 10
/// min), then 504 "Image pull timed out".
pub const ENV_HOT_PULL_TIMEOUT_MSECS: &str = "FN_HOT_PULL_TIMEOUT_MSECS";
/// `FN_IMAGE_ENABLE_VOLUME`: `true` accepts images with a `VOLUME`
/// (default false: 400 "image has Volume definition").
pub const ENV_IMAGE_ENABLE_VOLUME: &str = "FN_IMAGE_ENABLE_VOLUME";
/// `FN_FREEZE_IDLE_MSECS`: Fn pauses idle containers after this many ms. In
/// fnrs it defaults to off (negative): unpausing costs ~10 ms on the next
/// call. Parsed and kept in the config; neither the agent nor this driver
/// pauses containers yet.
pub const ENV_FREEZE_IDLE_MSECS: &str = "FN_FREEZE_IDLE_MSECS";

/// Label on every container: the id of the server that made it.
pub const LABEL_SERVER: &str = "fnrs.server";
/// Label on every container: the app id.
pub const LABEL_APP: &str = "fnrs.app_id";
/// Label on every container: the fn id.
pub const LABEL_FN: &str = "fnrs.fn_id";

/// The uid:gid of unprivileged containers (as Fn).
pub const CONTAINER_USER: &str = "1000:1000";

/// Fn's ulimits (soft = hard); `None` leaves the engine's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimits {
    /// [`ENV_MAX_OPEN_FILES`].
    pub nofile: Option<u64>,
    /// [`ENV_MAX_LOCKED_MEMORY`].
    pub memlock: Option<u64>,
    /// [`ENV_MAX_PENDING_SIGNALS`].
    pub sigpending: Option<u64>,
    /// [`ENV_MAX_MESSAGE_QUEUE`].
    pub msgqueue: Option<u64>,
}

impl Default for Ulimits {
    fn default() -> Self {
        Ulimits {
            nofile: Some(350),
            memlock: Some(65536),
            sigpending: Some(5000),
            msgqueue: Some(819200),
        }
    }
}

/// Whether a server (by id) is still running, for [`Driver::cleanup_leftovers`].
pub type IsLive = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Settings of the Docker driver; each field names the environment variable
/// the server maps onto it.
#[derive(Clone)]
pub struct DockerDriverConfig {
    /// [`ENV_DOCKER_HOST`]; `None` = the default unix socket.
    pub docker_host: Option<String>,
    /// This server's id, put in [`LABEL_SERVER`].
    pub server_id: String,
    /// Whether a server id belongs to a running server; containers of others
    /// are removed by `cleanup_leftovers`. Default: only this server is live.
    pub is_live: IsLive,
    /// [`ENV_DOCKER_AUTH`] (the JSON); `None` = `~/.docker/config.json`.
    pub auth: Option<String>,
    /// [`ENV_DOCKER_NETWORKS`], default none (the engine's default network).
    pub networks: Vec<String>,
    /// Not [`ENV_DISABLE_READONLY_ROOTFS`], default true.
    pub readonly_rootfs: bool,
    /// Not [`ENV_DISABLE_UNPRIVILEGED_CONTAINERS`], default true.
    pub unprivileged: bool,
    /// [`ENV_MAX_PIDS`], default 50 (0 = no limit).
    pub max_pids: u64,
    /// [`ENV_MAX_OPEN_FILES`] etc.
    pub ulimits: Ulimits,
    /// [`ENV_MAX_TMPFS_INODES`], default 0 (engine default).
    pub max_tmpfs_inodes: u64,
    /// [`ENV_MAX_FS_SIZE_MB`], default 0 (none).
    pub max_fs_size_mb: u64,
    /// ([`ENV_IOFS_PATH`], [`ENV_IOFS_DOCKER_PATH`]): iofs directories under
    /// the first are given to the engine under the second. Default none.
    pub iofs_translate: Option<(PathBuf, String)>,
    /// [`ENV_HOT_PULL_TIMEOUT_MSECS`], default 10 minutes.
    pub pull_timeout: Duration,
    /// [`ENV_IMAGE_ENABLE_VOLUME`], default false.
    pub enable_volume: bool,
    /// [`ENV_FREEZE_IDLE_MSECS`], default -1 (never pause). Not acted on.
    pub freeze_idle_msecs: i64,
    /// Per-request timeout of the engine client (not for streams), default 60 s.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for DockerDriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriverConfig")
            .field("docker_host", &self.docker_host)
            .field("server_id", &self.server_id)
            .field("auth", &self.auth.as_ref().map(|_| "<set>"))
            .field("networks", &self.networks)
            .field("readonly_rootfs", &self.readonly_rootfs)
            .field("unprivileged", &self.unprivileged)
            .field("max_pids", &self.max_pids)
            .field("ulimits", &self.ulimits)
            .field("max_tmpfs_inodes", &self.max_tmpfs_inodes)
            .field("max_fs_size_mb", &self.max_fs_size_mb)
            .field("iofs_translate", &self.iofs_translate)
            .field("pull_timeout", &self.pull_timeout)
            .field("enable_volume", &self.enable_volume)
            .field("freeze_idle_msecs", &self.freeze_idle_msecs)
            .finish_non_exhaustive()
    }
}

impl Default for DockerDriverConfig {
    fn default() -> Self {
        let server_id = String::new();
        DockerDriverConfig {
            docker_host: None,
            server_id,
            is_live: Arc::new(|_| false),
            auth: None,
            networks: Vec::new(),
            readonly_rootfs: true,
            unprivileged: true,
            max_pids: 50,
            ulimits: Ulimits::default(),
            max_tmpfs_inodes: 0,
            max_fs_size_mb: 0,
            iofs_translate: None,
            pull_timeout: Duration::from_secs(600),
            enable_volume: false,
            freeze_idle_msecs: -1,
            request_timeout: Duration::from_secs(60),
        }
    }
}

fn parse_bool(k: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{k} must be true or false, not {v:?}")),
    }
}

fn parse_num<T: FromStr>(k: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{k} must be an integer, not {v:?}"))
}

impl DockerDriverConfig {
    /// Build a config from `FN_*` settings (and `DOCKER_HOST`) looked up by
    /// name (e.g. `|k| std::env::var(k).ok()`); unset or empty settings keep
    /// their defaults. `server_id` and `is_live` are set by the caller. The
    /// error names the bad setting.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = DockerDriverConfig::default();
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(ENV_DOCKER_HOST) {
            c.docker_host = Some(v.trim().to_string());
        }
        if let Some(v) = get(ENV_DOCKER_AUTH) {
            RegistryAuth::parse(&v).map_err(|e| format!("{ENV_DOCKER_AUTH}: {e}"))?;
            c.auth = Some(v);
        }
        if let Some(v) = get(ENV_DOCKER_NETWORKS) {
            c.networks = v.split_whitespace().map(str::to_string).collect();
        }
        if let Some(v) = get(ENV_DISABLE_READONLY_ROOTFS) {
            c.readonly_rootfs = !parse_bool(ENV_DISABLE_READONLY_ROOTFS, &v)?;
        }
        if let Some(v) = get(ENV_DISABLE_UNPRIVILEGED_CONTAINERS) {
            c.unprivileged = !parse_bool(ENV_DISABLE_UNPRIVILEGED_CONTAINERS, &v)?;
        }
        if let Some(v) = get(ENV_IMAGE_ENABLE_VOLUME) {
            c.enable_volume = parse_bool(ENV_IMAGE_ENABLE_VOLUME, &v)?;
        }
        if let Some(v) = get(ENV_MAX_PIDS) {
            c.max_pids = parse_num(ENV_MAX_PIDS, &v)?;
        }
        if let Some(v) = get(ENV_MAX_TMPFS_INODES) {
            c.max_tmpfs_inodes = parse_num(ENV_MAX_TMPFS_INODES, &v)?;
        }
        if let Some(v) = get(ENV_MAX_FS_SIZE_MB) {
            c.max_fs_size_mb = parse_num(ENV_MAX_FS_SIZE_MB, &v)?;
        }
        if let Some(v) = get(ENV_HOT_PULL_TIMEOUT_MSECS) {
            let ms: i64 = parse_num(ENV_HOT_PULL_TIMEOUT_MSECS, &v)?;
            // Negative = no limit (a very long one).
            c.pull_timeout = if ms < 0 {
                Duration::from_secs(365 * 24 * 3600)
            } else {
                Duration::from_millis(ms as u64)
            };
        }
        if let Some(v) = get(ENV_FREEZE_IDLE_MSECS) {
            c.freeze_idle_msecs = parse_num(ENV_FREEZE_IDLE_MSECS, &v)?;
        }
        if let Some(docker_path) = get(ENV_IOFS_DOCKER_PATH) {
            let agent = get(ENV_IOFS_PATH)
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            c.iofs_translate = Some((agent, docker_path.trim().to_string()));
        }
        let limit = |k: &str, d: Option<u64>| -> Result<Option<u64>, String> {
            match get(k) {
                None => Ok(d),
                Some(v) => {
                    let n: i64 = parse_num(k, &v)?;
                    Ok((n > 0).then_some(n as u64))
                }
            }
        };
        c.ulimits.nofile = limit(ENV_MAX_OPEN_FILES, c.ulimits.nofile)?;
        c.ulimits.memlock = limit(ENV_MAX_LOCKED_MEMORY, c.ulimits.memlock)?;
        c.ulimits.sigpending = limit(ENV_MAX_PENDING_SIGNALS, c.ulimits.sigpending)?;
        c.ulimits.msgqueue = limit(ENV_MAX_MESSAGE_QUEUE, c.ulimits.msgqueue)?;
        Ok(c)
    }

    /// The engine-side path of an iofs directory the agent made at `dir`.
    pub fn engine_iofs_path(&self, dir: &Path) -> String {
        if let Some((agent_base, docker_base)) = &self.iofs_translate
            && let Ok(rel) = dir.strip_prefix(agent_base)
        {
            let base = docker_base.trim_end_matches('/');
            let rel = rel.to_string_lossy();
            return if rel.is_empty() {
                base.to_string()
            } else {
                format!("{base}/{rel}")
            };
        }
        dir.to_string_lossy().into_owned()
    }
}

type PullFuture = Shared<BoxFuture<'static, Result<(), DriverError>>>;

/// How long an image found present and acceptable is trusted by
/// [`Driver::start`] without inspecting it again (one engine request less per
/// cold start). A create that then finds it gone checks (pulls) it again; a
/// tag moved to an image with a `VOLUME` is noticed after this long.
pub const IMAGE_CHECK_TTL: Duration = Duration::from_secs(60);

/// Runs image references as containers on a Docker engine.
pub struct DockerDriver {
    config: DockerDriverConfig,
    /// The engine client, made on first use when the engine was missing.
    docker: Mutex<Option<Docker>>,
    /// Where the engine is, for messages.
    host: String,
    auth: RegistryAuth,
    /// Pulls in progress, by image reference.
    pulls: Arc<Mutex<HashMap<String, PullFuture>>>,
    /// When each image reference was last found present and acceptable.
    checked: Mutex<HashMap<String, std::time::Instant>>,
    /// Containers per network of [`DockerDriverConfig::networks`].
    network_use: Arc<Mutex<HashMap<String, usize>>>,
    /// The server host's name, given to containers on the default network.
    hostname: Option<String>,
}

impl std::fmt::Debug for DockerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriver")
            .field("host", &self.host)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether an engine error means the engine could not be reached at all.
fn is_connection_error(e: &BollardError) -> bool {
    !matches!(
        e,
        BollardError::DockerResponseServerError { .. }
            | BollardError::DockerStreamError { .. }
            | BollardError::DockerContainerWaitError { .. }
            | BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
    )
}

/// A client for `host` (no request is made; a unix socket must exist).
fn connect(host: &str, secs: u64) -> Result<Docker, BollardError> {
    let v = bollard::API_DEFAULT_VERSION;
    if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, secs, v)
    } else if host.starts_with('/') {
        Docker::connect_with_unix(host, secs, v)
    } else {
        Docker::connect_with_http(host, secs, v)
    }
}

impl DockerDriver {
    /// Make the driver. Does not contact the engine (a server starts without
    /// one); fails only on an unusable `DOCKER_HOST` or bad auth config.
    pub fn new(config: DockerDriverConfig) -> Result<DockerDriver, DriverError> {
        let host = config
            .docker_host
            .clone()
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let secs = config.request_timeout.as_secs().max(1);
        if !(host.starts_with("unix://")
            || host.starts_with("tcp://")
            || host.starts_with("http://")
            || host.starts_with('/'))
        {
            return Err(DriverError::Unavailable(format!(
                "{ENV_DOCKER_HOST} {host:?} is not supported (unix:// or tcp://)"
            )));
        }
        // The engine may come later: without its socket now, connect on use.
        let docker = match connect(&host, secs) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(host = %host, error = %e, "Docker engine not reachable");
                None
            }
        };
        let auth = match &config.auth {
            Some(json) => RegistryAuth::parse(json)
                .map_err(|e| DriverError::Internal(format!("{ENV_DOCKER_AUTH}: {e}")))?,
            None => RegistryAuth::from_docker_config(),
        };
        let network_use = config.networks.iter().map(|n| (n.clone(), 0)).collect();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Ok(DockerDriver {
            config,
            docker: Mutex::new(docker),
            host,
            auth,
            pulls: Arc::new(Mutex::new(HashMap::new())),
            checked: Mutex::new(HashMap::new()),
            network_use: Arc::new(Mutex::new(network_use)),
            hostname,
        })
    }

    /// The config in use.
    pub fn config(&self) -> &DockerDriverConfig {
        &self.config
    }

    /// The engine client (for tests and tools); connects when not yet
    /// connected. `Unavailable` when the engine's socket is missing.
    pub fn client(&self) -> Result<Docker, DriverError> {
        let mut slot = self.docker.lock();
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let secs = self.config.request_timeout.as_secs().max(1);
        let d = connect(&self.host, secs).map_err(|e| self.unavailable(&e))?;
        *slot = Some(d.clone());
        Ok(d)
    }

    fn unavailable(&self, e: &BollardError) -> DriverError {
        DriverError::Unavailable(format!("Docker engine unavailable at {}: {e}", self.host))
    }

    /// Map an engine error: unreachable engine → Unavailable, else Internal.
    fn engine_error(&self, what: &str, e: BollardError) -> DriverError {
        if is_connection_error(&e) {
            self.unavailable(&e)
        } else {
            DriverError::Internal(format!("{what}: {e}"))
        }
    }

    /// Make sure `image` is present locally (pulling it when missing) and
    /// acceptable (no `VOLUME` unless allowed).
    pub async fn ensure_image(&self, image: &str) -> Result<(), DriverError> {
        let parsed = ImageRef::parse(image)
            .map_err(|e| DriverError::BadImage(format!("invalid image '{image}': {e}")))?;
        let docker = self.client()?;
        let inspect = match docker.inspect_image(image).await {
            Ok(i) => i,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.pull(&docker, image, &parsed).await?;
                docker
                    .inspect_image(image)
                    .await
                    .map_err(|e| self.engine_error("inspecting pulled image", e))?
            }
            Err(e) => return Err(self.engine_error("inspecting image", e)),
        };
        let has_volume = inspect
            .config
            .as_ref()
            .and_then(|c| c.volumes.as_ref())
            .is_some_and(|v| !v.is_empty());
        if has_volume && !self.config.enable_volume {
            return Err(DriverError::BadImage("image has Volume definition".into()));
        }
        self.checked
            .lock()
            .insert(image.to_string(), std::time::Instant::now());
        Ok(())
    }

    /// Whether `image` passed [`DockerDriver::ensure_image`] within
    /// [`IMAGE_CHECK_TTL`].
    fn recently_checked(&self, image: &str) -> bool {
        let mut checked = self.checked.lock();
        match checked.get(image) {
            Some(t) if t.elapsed() < IMAGE_CHECK_TTL => true,
            Some(_) => {
                checked.remove(image);
                false
            }
            None => false,
        }
    }

    /// Pull, coalesced with any pull of the same image in progress, bounded by
    /// the pull timeout.
    async fn pull(
        &self,
        docker: &Docker,
        image: &str,
        parsed: &ImageRef,
    ) -> Result<(), DriverError> {
        let fut = {
            let mut pulls = self.pulls.lock();
            pulls
                .entry(image.to_string())
                .or_insert_with(|| {
                    let docker = docker.clone();
                    let creds = self.auth.for_image(parsed);
                    let (from, tag) = parsed.pull_params();
                    let img = image.to_string();
                    let host = self.host.clone();
                    let pulls = Arc::clone(&self.pulls);
                    async move {
                        let r = pull_image(&docker, &img, &from, &tag, creds, &host).await;
                        pulls.lock().remove(&img);
                        r
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        match tokio::time::timeout(self.config.pull_timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(image, "image pull timed out");
                // Let a later call start afresh.
                self.pulls.lock().remove(image);
                Err(DriverError::PullTimeout)
            }
        }
    }

    /// Pick the least used configured network, counted until released.
    fn take_network(&self) -> Option<String> {
        let mut use_ = self.network_use.lock();
        let name = use_
            .iter()
            .min_by_key(|(n, c)| (**c, (*n).clone()))?
            .0
            .clone();
        *use_.get_mut(&name)? += 1;
        Some(name)
    }

    fn container_body(&self, spec: &InstanceSpec, network: Option<&str>) -> ContainerCreateBody {
        let mib = 1024 * 1024;
        let memory = (spec.memory_mb as i64).saturating_mul(mib);
        let mut labels = HashMap::new();
        labels.insert(LABEL_SERVER.to_string(), self.config.server_id.clone());
        labels.insert(LABEL_APP.to_string(), spec.app_id.clone());
        labels.insert(LABEL_FN.to_string(), spec.fn_id.clone());
        let ul = |name: &str, v: Option<u64>| {
            v.map(|v| ResourcesUlimits {
                name: Some(name.to_string()),
                soft: Some(v as i64),
                hard: Some(v as i64),
            })
        };
        let u = self.config.ulimits;
        let ulimits: Vec<ResourcesUlimits> = [
            ul("nofile", u.nofile),
            ul("memlock", u.memlock),
            ul("sigpending", u.sigpending),
            ul("msgqueue", u.msgqueue),
        ]
        .into_iter()
        .flatten()
        .collect();
        let tmpfs = self.config.readonly_rootfs.then(|| {
            let opts = if self.config.max_tmpfs_inodes > 0 {
                format!("nr_inodes={}", self.config.max_tmpfs_inodes)
            } else {
                String::new()
            };
            HashMap::from([("/tmp".to_string(), opts)])
        });
        let binds = spec
            .iofs_dir
            .as_ref()
            .map(|d| vec![format!("{}:{IOFS_MOUNT}", self.config.engine_iofs_path(d))]);
        let storage_opt = (self.config.max_fs_size_mb > 0).then(|| {
            HashMap::from([(
                "size".to_string(),
                format!("{}M", self.config.max_fs_size_mb),
            )])
        });
        let host_config = HostConfig {
            init: Some(true),
            readonly_rootfs: Some(self.config.readonly_rootfs),
            memory: Some(memory),
            memory_swap: Some(memory),
            memory_swappiness: Some(0),
            pids_limit: (self.config.max_pids > 0).then_some(self.config.max_pids as i64),
            ulimits: Some(ulimits),
            tmpfs,
            binds,
            storage_opt,
            network_mode: network.map(str::to_string),
            log_config: Some(log_config(spec)),
            cap_drop: self.config.unprivileged.then(|| vec!["ALL".to_string()]),
            security_opt: self
                .config
                .unprivileged
                .then(|| vec!["no-new-privileges".to_string()]),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            hostname: if network.is_none() {
                self.hostname.clone()
            } else {
                None
            },
            user: self.config.unprivileged.then(|| CONTAINER_USER.to_string()),
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(spec.stdin),
            stdin_once: Some(spec.stdin),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    async fn force_remove(docker: &Docker, name: &str) -> Result<(), BollardError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // 409: removal already in progress.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

async fn pull_image(
    docker: &Docker,
    image: &str,
    from: &str,
    tag: &str,
    creds: Option<bollard::auth::DockerCredentials>,
    host: &str,
) -> Result<(), DriverError> {
    tracing::info!(image, "pulling image");
    let opts = CreateImageOptionsBuilder::default()
        .from_image(from)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(opts), None, creds);
    let fail = |status: u16, msg: &str| DriverError::Pull {
        status,
        message: format!("Failed to pull image '{image}': {msg}"),
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => {}
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) => {
                tracing::info!(image, status = status_code, error = %message, "image pull failed");
                let status = if (400..500).contains(&status_code) {
                    status_code
                } else {
                    502
                };
                return Err(fail(status, &message));
            }
            Err(BollardError::DockerStreamError { error }) => {
                tracing::info!(image, error = %error, "image pull failed");
                return Err(fail(502, &error));
            }
            Err(e) if is_connection_error(&e) => {
                return Err(DriverError::Unavailable(format!(
                    "Docker engine unavailable at {host}: {e}"
                )));
            }
            Err(e) => return Err(fail(502, &e.to_string())),
        }
    }
    tracing::info!(image, "image pulled");
    Ok(())
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn handles(&self, image: &str) -> bool {
        !image.starts_with("file://")
    }

    async fn check_image(&self, image: &str) -> Result<(), DriverError> {
        ImageRef::parse(image)
            .map(|_| ())
            .map_err(|e| DriverError::BadImage(format!("invalid image '{image}': {e}")))
    }

    async fn start(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, DriverError> {
        let docker = self.client()?;
        let t0 = std::time::Instant::now();
        let trusted = self.recently_checked(&spec.image);
        if !trusted {
            self.ensure_image(&spec.image).await?;
        }
        let t_image = t0.elapsed();
        let network = self.take_network();
        let release = NetworkLease {
            uses: Arc::clone(&self.network_use),
            name: network.clone(),
        };
        let body = self.container_body(&spec, network.as_deref());
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.id)
            .build();
        let mut created = docker
            .create_container(Some(opts.clone()), body.clone())
            .await;
        if trusted
            && matches!(
                created,
                Err(BollardError::DockerResponseServerError {
                    status_code: 404,
                    ..
                })
            )
        {
            // The image went away since it was checked: check (pull) again.
            self.checked.lock().remove(&spec.image);
            self.ensure_image(&spec.image).await?;
            created = docker.create_container(Some(opts), body).await;
        }
        match created {
            Ok(_) => {}
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                // The image vanished between inspect and create.
                return Err(DriverError::Internal(format!(
                    "creating container: {message}"
                )));
            }
            Err(BollardError::DockerResponseServerError { message, .. })
                if spec.syslog_url.is_some() && message.contains("log") =>
            {
                return Err(DriverError::Syslog(message));
            }
            Err(e) => return Err(self.engine_error("creating container", e)),
        }
        let t_create = t0.elapsed();
        let id = spec.id.clone();
        // From here on, failures remove the container.
        let cleanup = |e: DriverError| {
            let docker = docker.clone();
            let id = id.clone();
            async move {
                if let Err(re) = DockerDriver::force_remove(&docker, &id).await {
                    tracing::warn!(container = %id, error = %re, "removing failed container");
                }
                e
            }
        };
        let attach_opts = AttachContainerOptionsBuilder::default()
            .stdin(spec.stdin)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        let attached = match docker.attach_container(&id, Some(attach_opts)).await {
            Ok(a) => a,
            Err(e) => return Err(cleanup(self.engine_error("attaching container", e)).await),
        };
        let t_attach = t0.elapsed();
        // Wait is set up before start so that a fast exit is not missed.
        let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
        let (out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (err_w, err_r) = tokio::io::duplex(64 * 1024);
        let demux = tokio::spawn(demultiplex(attached.output, out_w, err_w));
        if let Err(e) = docker.start_container(&id, None).await {
            demux.abort();
            let e = match e {
                BollardError::DockerResponseServerError { message, .. }
                    if spec.syslog_url.is_some() && message.contains("logging driver") =>
                {
                    DriverError::Syslog(message)
                }
                BollardError::DockerResponseServerError {
                    status_code,
                    message,
                } if status_code < 500 || !message.is_empty() => {
                    DriverError::Internal(format!("starting container: {message}"))
                }
                e => self.engine_error("starting container", e),
            };
            return Err(cleanup(e).await);
        }
        let waiter = {
            let docker = docker.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let info = wait_exit(&docker, &id).await;
                let _ = exit_tx.send(Some(info));
            })
        };
        tracing::debug!(
            container = %id,
            fn_id = %spec.fn_id,
            image = %spec.image,
            image_us = t_image.as_micros() as u64,
            create_us = t_create.as_micros() as u64,
            attach_us = t_attach.as_micros() as u64,
            start_us = t0.elapsed().as_micros() as u64,
            "container started"
        );
        let stdin: Option<Pin<Box<dyn AsyncWrite + Send>>> = if spec.stdin {
            Some(attached.input)
        } else {
            None
        };
        Ok(Box::new(DockerInstance {
            id,
            docker: docker.clone(),
            io: Mutex::new(Some(InstanceIo {
                stdin,
                stdout: Box::pin(out_r),
                stderr: Box::pin(err_r),
            })),
            exit: exit_rx,
            tasks: Mutex::new(vec![demux, waiter]),
            destroyed: tokio::sync::Mutex::new(false),
            _network: release,
        }))
    }

    async fn cleanup_leftovers(&self) -> Result<(), DriverError> {
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([("label", vec![LABEL_SERVER])]))
            .build();
        let docker = self.client()?;
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.engine_error("listing containers", e))?;
        let mut live_cache: HashMap<String, bool> = HashMap::new();
        let mut failed = 0;
        for c in list {
            let Some(server) = c.labels.as_ref().and_then(|l| l.get(LABEL_SERVER)).cloned() else {
                continue;
            };
            if server == self.config.server_id {
                continue;
            }
            let live = *live_cache
                .entry(server.clone())
                .or_insert_with(|| (self.config.is_live)(&server));
            if live {
                continue;
            }
            let Some(cid) = c.id else { continue };
            tracing::info!(container = %cid, server = %server, "removing leftover container");
            if let Err(e) = DockerDriver::force_remove(&docker, &cid).await {
                tracing::warn!(container = %cid, error = %e, "removing leftover container failed");
                failed += 1;
            }
        }
        if failed > 0 {
            // The servers' locks must stay for the next start to retry.
            return Err(DriverError::Internal(format!(
                "{failed} leftover containers could not be removed"
            )));
        }
        Ok(())
    }

    async fn health(&self) -> serde_json::Value {
        let docker = match self.client() {
            Ok(d) => d,
            Err(e) => {
                return serde_json::json!({"ok": false, "host": self.host, "error": e.to_string()});
            }
        };
        let v = tokio::time::timeout(Duration::from_secs(5), docker.version()).await;
        match v {
            Ok(Ok(v)) => serde_json::json!({
                "ok": true,
                "host": self.host,
                "version": v.version,
                "api_version": v.api_version,
            }),
            Ok(Err(e)) => serde_json::json!({
                "ok": false,
                "host": self.host,
                "error": format!("Docker engine unavailable at {}: {e}", self.host),
            }),
            Err(_) => serde_json::json!({
                "ok": false,
                "host": self.host,
                "error": format!("Docker engine at {} did not answer within 5 s", self.host),
            }),
        }
    }
}

/// Gives a network back to the least-used count when the instance goes.
struct NetworkLease {
    uses: Arc<Mutex<HashMap<String, usize>>>,
    name: Option<String>,
}

impl Drop for NetworkLease {
    fn drop(&mut self) {
        if let Some(n) = &self.name
            && let Some(c) = self.uses.lock().get_mut(n)
        {
            *c = c.saturating_sub(1);
        }
    }
}

/// Copy the attach stream's frames to the stdout and stderr pipes. A pipe
/// whose reader is gone is skipped; the other goes on.
async fn demultiplex(
    mut output: Pin<Box<dyn futures::Stream<Item = Result<LogOutput, BollardError>> + Send>>,
    out: DuplexStream,
    err: DuplexStream,
) {
    let mut out = Some(out);
    let mut err = Some(err);
    while let Some(item) = output.next().await {
        let (sink, bytes) = match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                (&mut out, message)
            }
            Ok(LogOutput::StdErr { message }) => (&mut err, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "attach stream ended");
                break;
            }
        };
        if let Some(w) = sink
            && w.write_all(&bytes).await.is_err()
        {
            *sink = None;
        }
    }
    for w in [out, err].into_iter().flatten() {
        let mut w = w;
        let _ = w.shutdown().await;
    }
}

/// How long one wait request may take (a hot container lives for hours).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Wait for the container to stop; code from wait, OOM from inspect.
async fn wait_exit(docker: &Docker, id: &str) -> ExitInfo {
    // The engine answers a wait only when the container stops, so the
    // client's per-request timeout must not apply to it.
    let waiter = docker.clone().with_timeout(WAIT_TIMEOUT);
    let mut code = -1;
    // Each round re-waits after a transport failure while the container
    // still runs; bounded so that a broken engine cannot spin forever.
    for _ in 0..1000 {
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match waiter.wait_container(id, Some(opts)).next().await {
            Some(Ok(r)) => {
                code = r.status_code as i32;
                break;
            }
            Some(Err(BollardError::DockerContainerWaitError { code: c, .. })) => {
                code = c as i32;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(container = %id, error = %e, "wait failed");
                let running = docker
                    .inspect_container(id, None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                if !running {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => break,
        }
    }
    let mut oom_killed = false;
    if let Ok(info) = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        && let Some(state) = info.state
    {
        oom_killed = state.oom_killed.unwrap_or(false);
        if code < 0
            && let Some(c) = state.exit_code
        {
            code = c as i32;
        }
    }
    if code < 0 {
        // Gone without a status (removed): report a kill.
        code = 137;
    }
    ExitInfo { code, oom_killed }
}

/// A running container.
struct DockerInstance {
    id: String,
    docker: Docker,
    io: Mutex<Option<InstanceIo>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    destroyed: tokio::sync::Mutex<bool>,
    _network: NetworkLease,
}

#[async_trait]
impl Instance for DockerInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn take_io(&mut self) -> Option<InstanceIo> {
        self.io.get_mut().take()
    }

    async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        let seen = rx.wait_for(|v| v.is_some()).await.ok().and_then(|v| *v);
        // Without a value the waiter task is gone (destroyed before the exit
        // was seen): a kill.
        seen.unwrap_or(ExitInfo {
            code: 137,
            oom_killed: false,
        })
    }

    async fn destroy(&self) {
        let mut done = self.destroyed.lock().await;
        if *done {
            return;
        }
        // Kill first so the waiter sees the exit and inspect still works.
        let kill = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let _ = self.docker.kill_container(&self.id, Some(kill)).await;
        if self.exit.borrow().is_none() {
            let mut rx = self.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| v.is_some())).await;
        }
        for attempt in 0..3 {
            match DockerDriver::force_remove(&self.docker, &self.id).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(container = %self.id, error = %e, attempt, "removing container failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        *done = true;
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        // Dropped without destroy: remove the container in the background.
        if !*self.destroyed.get_mut()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move {
                if let Err(e) = DockerDriver::force_remove(&docker, &id).await {
                    tracing::warn!(container = %id, error = %e, "removing dropped container failed");
                }
            });
        }
    }
}

/// The container's log driver: `none` (fnrs reads the output through the
/// attach streams), or Docker's `syslog` driver when the app has a
/// `syslog_url`, configured as Fn does (facility user, RFC 5424, a tag naming
/// the app and fn). Attach still delivers the output for the call logs.
fn log_config(spec: &InstanceSpec) -> HostConfigLogConfig {
    match spec.syslog_url.as_deref().filter(|u| !u.is_empty()) {
        None => HostConfigLogConfig {
            typ: Some("none".to_string()),
            config: None,
        },
        Some(url) => HostConfigLogConfig {
            typ: Some("syslog".to_string()),
            config: Some(HashMap::from([
                ("syslog-address".to_string(), url.to_string()),
                ("syslog-facility".to_string(), "user".to_string()),
                ("syslog-format".to_string(), "rfc5424".to_string()),
                (
                    "tag".to_string(),
                    format!("app_id={},fn_id={}", spec.app_id, spec.fn_id),
                ),
            ])),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_lookup() {
        let env = HashMap::from([
            (ENV_DISABLE_READONLY_ROOTFS, "true"),
            (ENV_MAX_PIDS, "70"),
            (ENV_MAX_OPEN_FILES, "-1"),
            (ENV_DOCKER_NETWORKS, " a  b "),
            (ENV_IOFS_PATH, "/iofs"),
            (ENV_IOFS_DOCKER_PATH, "/var/lib/fn/iofs/"),
            (ENV_HOT_PULL_TIMEOUT_MSECS, "1500"),
        ]);
        let c = DockerDriverConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert!(!c.readonly_rootfs);
        assert!(c.unprivileged);
        assert_eq!(c.max_pids, 70);
        assert_eq!(c.ulimits.nofile, None);
        assert_eq!(c.ulimits.memlock, Some(65536));
        assert_eq!(c.networks, vec!["a", "b"]);
        assert_eq!(c.pull_timeout, Duration::from_millis(1500));
        assert_eq!(c.freeze_idle_msecs, -1);
        assert_eq!(
            c.engine_iofs_path(Path::new("/iofs/fnrs/S/iofs1")),
            "/var/lib/fn/iofs/fnrs/S/iofs1"
        );
        assert_eq!(c.engine_iofs_path(Path::new("/other/x")), "/other/x");
        let bad = DockerDriverConfig::from_lookup(|k| (k == ENV_MAX_PIDS).then(|| "x".to_string()));
        assert!(bad.unwrap_err().contains(ENV_MAX_PIDS));
        let bad =
            DockerDriverConfig::from_lookup(|k| (k == ENV_DOCKER_AUTH).then(|| "{".to_string()));
        assert!(bad.unwrap_err().contains(ENV_DOCKER_AUTH));
    }

    #[test]
    fn container_spec_follows_fn() {
        let d = DockerDriver::new(DockerDriverConfig {
            server_id: "SRV".into(),
            ..Default::default()
        })
        .unwrap();
        let spec = InstanceSpec {
            id: "ID".into(),
            app_id: "APP".into(),
            fn_id: "FN".into(),
            image: "x/y:1".into(),
            env: vec![("A".into(), "b".into())],
            memory_mb: 64,
            iofs_dir: Some("/tmp/iofs123".into()),
            stdin: false,
            syslog_url: None,
        };
        let b = d.container_body(&spec, None);
        let h = b.host_config.unwrap();
        assert_eq!(h.memory, Some(64 << 20));
        assert_eq!(h.memory_swap, Some(64 << 20));
        assert_eq!(h.init, Some(true));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.pids_limit, Some(50));
        assert_eq!(h.binds, Some(vec!["/tmp/iofs123:/tmp/iofs".to_string()]));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.env, Some(vec!["A=b".to_string()]));
        assert_eq!(
            b.labels.unwrap().get(LABEL_SERVER).map(String::as_str),
            Some("SRV")
        );
        assert_eq!(b.open_stdin, Some(false));
    }

    #[test]
    fn handles_and_check_image() {
        let d = DockerDriver::new(DockerDriverConfig::default()).unwrap();
        assert!(d.handles("fnproject/hello"));
        assert!(!d.handles("file:///srv/fn"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(d.check_image("fnproject/hello:0.0.1")).is_ok());
        assert!(matches!(
            rt.block_on(d.check_image("Bad Image")),
            Err(DriverError::BadImage(_))
        ));
    }
}
