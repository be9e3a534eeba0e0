//! The driver's settings: [`DockerDriverConfig`] and its parsing from Fn's
//! `FN_*` variables (and `DOCKER_HOST`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::reference::RegistryAuth;

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

/// Whether a server (by id) is still running, for [`Driver::cleanup_leftovers`](fnrs_driver::Driver::cleanup_leftovers).
pub type IsLive = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Settings of the Docker driver; each field names the environment variable
/// the server maps onto it.
#[derive(Clone)]
pub struct DockerDriverConfig {
    /// [`ENV_DOCKER_HOST`]; `None` = the default unix socket.
    pub docker_host: Option<String>,
    /// This server's id, put in [`LABEL_SERVER`](crate::LABEL_SERVER).
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
}
