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
//!   `none`, or syslog for apps with a `syslog_url`; labels [`LABEL_SERVER`] (the server id), [`LABEL_APP`],
//!   [`LABEL_FN`].
//! - **Streams**: attached before start; stdout and stderr demultiplexed into
//!   two readers; stdin attached only when the spec asks for it (closing it
//!   closes the container's stdin).
//! - **End**: `wait` gives the exit code (137 after a kill) and inspect's
//!   `OOMKilled`; `destroy` force-removes the container with its volumes.
//! - **Ownership**: from before its create request a container is owned by
//!   a guard that removes it on every path (error, or the start's future
//!   dropped) until it is handed over in the instance; an instance dropped
//!   without `destroy` removes it too. Create and start requests finish in
//!   tasks of their own, and removal waits for them; [`Driver::shutdown`]
//!   waits for removals under way.
//! - **Leftovers**: [`Driver::cleanup_leftovers`] removes containers labelled
//!   by a server that is not running any more ([`DockerDriverConfig::is_live`];
//!   `fnrs serve` counts a server as running while it holds its lock, so
//!   a server without a lock file is not), 16 at a time (SIGKILL, then force
//!   remove). [`Driver::shutdown`] removes this server's remaining containers
//!   the same way.
//! - **Not done**: pausing idle containers ([`ENV_FREEZE_IDLE_MSECS`], off by
//!   default here: Fn's pause costs ~10 ms on the next call), the image
//!   cleaner, prefork pools.
//!
//! Layout: `config` (the settings and their parsing), `image` (inspect and
//! pull), `spec` (the container spec, a pure function of the instance spec
//! and the settings, and the labels), `instance` (attach, start, wait,
//! removal), `reference` (image references and credentials).

mod config;
mod image;
mod instance;
mod reference;
mod spec;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::ListContainersOptionsBuilder;
use fnrs_driver::{Driver, DriverError, Instance, InstanceSpec};
use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

pub use config::*;
pub use image::IMAGE_CHECK_TTL;
pub use reference::{ImageRef, RegistryAuth};
pub use spec::{CONTAINER_USER, LABEL_APP, LABEL_FN, LABEL_SERVER};

use image::PullFuture;
use instance::ContainerGuard;

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
    /// Engine requests and removals that outlive a dropped start or instance.
    tasks: TaskTracker,
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
            tasks: TaskTracker::new(),
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
}

/// Gives a network back to the least-used count when the instance goes.
pub(crate) struct NetworkLease {
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
        let body = spec::container_body(
            &spec,
            &self.config,
            network.as_deref(),
            self.hostname.as_deref(),
        );
        let opts = spec::create_options(&spec);
        // From here on the guard owns the container (removed unless handed
        // over in the instance), even while its create is under way.
        let guard = ContainerGuard::new(docker.clone(), spec.id.clone(), self.tasks.clone());
        let create = || {
            let (docker, opts, body) = (docker.clone(), opts.clone(), body.clone());
            async move { docker.create_container(Some(opts), body).await }
        };
        let mut created = guard.run(create()).await?;
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
            created = guard.run(create()).await?;
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
        let engine_error = |what: &str, e| self.engine_error(what, e);
        let (inst, t_attach) = instance::launch(guard, &spec, release, engine_error, t0).await?;
        tracing::debug!(
            container = %spec.id,
            fn_id = %spec.fn_id,
            image = %spec.image,
            image_us = t_image.as_micros() as u64,
            create_us = t_create.as_micros() as u64,
            attach_us = t_attach.as_micros() as u64,
            start_us = t0.elapsed().as_micros() as u64,
            "container started"
        );
        Ok(Box::new(inst))
    }

    async fn cleanup_leftovers(&self) -> Result<(), DriverError> {
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&spec::server_filter(None))
            .build();
        let docker = self.client()?;
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| self.engine_error("listing containers", e))?;
        let mut live_cache: HashMap<String, bool> = HashMap::new();
        let mut leftovers = Vec::new();
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
            leftovers.push(cid);
        }
        let failed = instance::end_all(&docker, leftovers).await;
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

    async fn shutdown(&self) {
        // Removals begun by dropped starts and instances finish first.
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "container removals still under way at shutdown"
            );
        }
        // Then whatever of this server is still there goes, all at once.
        let Ok(docker) = self.client() else { return };
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&spec::server_filter(Some(&self.config.server_id)))
            .build();
        match docker.list_containers(Some(opts)).await {
            Ok(list) => {
                let ids: Vec<String> = list.into_iter().filter_map(|c| c.id).collect();
                if !ids.is_empty() {
                    tracing::info!(containers = ids.len(), "removing containers at shutdown");
                }
                let failed = instance::end_all(&docker, ids).await;
                if failed > 0 {
                    tracing::warn!(failed, "containers left at shutdown");
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing containers at shutdown failed"),
        }
    }
}

/// Longest wait of [`Driver::shutdown`] for removals under way.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

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
