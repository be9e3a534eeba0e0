//! The agent's part of `fnrs serve`: its settings (Fn's `FN_*` variables and
//! fnrs's new ones), the drivers, and the adapter that lets the API invoke
//! through the agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use fnrs_agent::{Agent, AgentConfig, InvokeCall};
use fnrs_api::{BoxBody, InvokeError, InvokeRequest, Invoker, Lookup};
use fnrs_datastore::{CachedStore, Datastore};
use fnrs_driver::Driver;
use fnrs_driver_docker::{DockerDriver, DockerDriverConfig};
use fnrs_driver_process::{
    self as pd, NetworkMode, ProcessDriver, ProcessDriverConfig, SandboxMode,
};
use fnrs_model::{App, Error, Fn, Trigger};

/// Socket-readiness limit of a new instance, in ms.
pub const ENV_HOT_START_TIMEOUT_MSECS: &str = "FN_HOT_START_TIMEOUT_MSECS";
/// Longest wait of a call for an instance or memory before 503, in ms.
pub const ENV_MAX_QUEUE_WAIT_MSECS: &str = "FN_MAX_QUEUE_WAIT_MSECS";
/// How long a call waits for a busy fn's instance before it starts one, in ms.
pub const ENV_HOT_POLL_MSECS: &str = "FN_HOT_POLL_MSECS";
/// Cap on memory used by instances, in bytes (detected otherwise).
pub const ENV_MAX_TOTAL_MEMORY_BYTES: &str = "FN_MAX_TOTAL_MEMORY_BYTES";
/// Where iofs directories are made.
pub const ENV_IOFS_PATH: &str = "FN_IOFS_PATH";
/// Mount a tmpfs on each instance's iofs directory (Fn's name).
pub const ENV_IOFS_TMPFS: &str = "FN_IOFS_TMPFS";
/// Mount options of that tmpfs (Fn's name).
pub const ENV_IOFS_OPTS: &str = "FN_IOFS_OPTS";
/// The default of [`ENV_IOFS_OPTS`]: room for the socket, not for data.
pub const DEFAULT_IOFS_OPTS: &str = "size=1m,nr_inodes=64,mode=0777";
/// Largest function response body, in bytes (0 = no limit).
pub const ENV_MAX_RESPONSE_SIZE: &str = "FN_MAX_RESPONSE_SIZE";
/// Largest function response head, in bytes (0 = 10 MiB).
pub const ENV_MAX_HDR_RESPONSE_SIZE: &str = "FN_MAX_HDR_RESPONSE_SIZE";
/// Log kept per call, in bytes.
pub const ENV_MAX_LOG_SIZE_BYTES: &str = "FN_MAX_LOG_SIZE_BYTES";
/// Don't echo function output into the server log at debug level.
pub const ENV_DISABLE_DEBUG_USER_LOGS: &str = "FN_DISABLE_DEBUG_USER_LOGS";
/// How long a busy detached call keeps trying, in seconds.
pub const ENV_DETACHED_MAX_AGE_SECS: &str = "FN_DETACHED_MAX_AGE_SECS";
/// Bytes of call records and logs waiting for the store.
pub const ENV_RECORDER_BACKLOG_BYTES: &str = "FN_RECORDER_BACKLOG_BYTES";
/// Call records kept per fn (older ones are pruned).
pub const ENV_MAX_CALLS_PER_FN: &str = "FN_MAX_CALLS_PER_FN";

/// A parser of a number setting whose error names the variable.
fn number<T>(
    name: &'static str,
) -> impl std::ops::Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    move |v: &str| {
        v.trim()
            .parse()
            .map_err(|e| format!("{name}={v:?} is not a number here: {e}"))
    }
}

/// Settings of the agent and of the process driver.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Time for a new instance to create its socket, in ms (then 504).
    #[arg(long, env = ENV_HOT_START_TIMEOUT_MSECS, value_parser = number::<u64>(ENV_HOT_START_TIMEOUT_MSECS), default_value_t = 5000)]
    pub hot_start_timeout_msecs: u64,
    /// Longest wait of a call for an instance or memory, in ms (then 503).
    #[arg(long, env = ENV_MAX_QUEUE_WAIT_MSECS, value_parser = number::<u64>(ENV_MAX_QUEUE_WAIT_MSECS), default_value_t = 30_000)]
    pub max_queue_wait_msecs: u64,
    /// How long a call waits for a busy fn's instance to free up before it
    /// starts another, in ms (a fn without instances starts one at once).
    #[arg(long, env = ENV_HOT_POLL_MSECS, value_parser = number::<u64>(ENV_HOT_POLL_MSECS), default_value_t = fnrs_agent::DEFAULT_HOT_POLL_MSECS)]
    pub hot_poll_msecs: u64,
    /// Memory for instances in bytes [default: detected, cgroup-aware].
    #[arg(long, env = ENV_MAX_TOTAL_MEMORY_BYTES, value_parser = number::<u64>(ENV_MAX_TOTAL_MEMORY_BYTES))]
    pub max_total_memory_bytes: Option<u64>,
    /// Directory for the instances' iofs directories [default: /run/fnrs/iofs
    /// as root, else the temp dir].
    #[arg(long, env = ENV_IOFS_PATH)]
    pub iofs_path: Option<PathBuf>,
    /// Mount a small tmpfs on each instance's iofs directory, bounding what
    /// a function can write there [default: true as root, else false].
    #[arg(long, env = ENV_IOFS_TMPFS)]
    pub iofs_tmpfs: Option<bool>,
    /// Mount options of the iofs tmpfs (always nosuid, nodev, noexec).
    #[arg(long, env = ENV_IOFS_OPTS, default_value = DEFAULT_IOFS_OPTS)]
    pub iofs_opts: String,
    /// Largest function response body in bytes (0 = no limit).
    #[arg(long, env = ENV_MAX_RESPONSE_SIZE, value_parser = number::<u64>(ENV_MAX_RESPONSE_SIZE), default_value_t = 0)]
    pub max_response_size: u64,
    /// Largest function response head in bytes (0 = 10 MiB).
    #[arg(long, env = ENV_MAX_HDR_RESPONSE_SIZE, value_parser = number::<usize>(ENV_MAX_HDR_RESPONSE_SIZE), default_value_t = 0)]
    pub max_hdr_response_size: usize,
    /// Log kept per call, in bytes.
    #[arg(long, env = ENV_MAX_LOG_SIZE_BYTES, value_parser = number::<usize>(ENV_MAX_LOG_SIZE_BYTES), default_value_t = 1024 * 1024)]
    pub max_log_size_bytes: usize,
    /// Don't echo function output into the server log (at debug level).
    #[arg(long, env = ENV_DISABLE_DEBUG_USER_LOGS, default_value_t = false)]
    pub disable_debug_user_logs: bool,
    /// How long a detached call that finds the server busy keeps trying
    /// (with backoff), in seconds; then it is recorded as failed.
    #[arg(long, env = ENV_DETACHED_MAX_AGE_SECS, value_parser = number::<u64>(ENV_DETACHED_MAX_AGE_SECS), default_value_t = 3600)]
    pub detached_max_age_secs: u64,
    /// Bytes of call records and logs waiting for the store; beyond it logs,
    /// then records, are dropped (counted in /metrics).
    #[arg(long, env = ENV_RECORDER_BACKLOG_BYTES, value_parser = number::<usize>(ENV_RECORDER_BACKLOG_BYTES), default_value_t = fnrs_agent::DEFAULT_BACKLOG_BYTES)]
    pub recorder_backlog_bytes: usize,
    /// Call records kept per fn.
    #[arg(long, env = ENV_MAX_CALLS_PER_FN, value_parser = number::<u32>(ENV_MAX_CALLS_PER_FN), default_value_t = 1000)]
    pub max_calls_per_fn: u32,
    /// Process sandbox: auto (bwrap when installed, else none with a
    /// warning), bwrap (required), none.
    #[arg(long, env = pd::ENV_SANDBOX, default_value = "auto", value_parser = pd::parse_sandbox)]
    pub process_sandbox: SandboxMode,
    /// Network of sandboxed processes: private (their own, outbound
    /// through pasta; the host's loopback unreachable), none, or shared (the
    /// host's, loopback and this server's API included).
    #[arg(long, env = pd::ENV_NETWORK, default_value = "private", value_parser = pd::parse_network)]
    pub process_network: NetworkMode,
    /// Sandboxes kept ready for cold starts (0 = none).
    #[arg(long, env = pd::ENV_POOL_SIZE, default_value = "4", value_parser = pd::parse_pool_size)]
    pub process_pool_size: usize,
    /// Absolute path of pasta (Debian's passt) for the private network
    /// [default: found in /usr/bin…].
    #[arg(long, env = pd::ENV_PASTA, value_parser = pd::parse_pasta)]
    pub process_pasta: Option<PathBuf>,
    /// Absolute path of bwrap (bubblewrap) [default: found in /usr/local/bin, /usr/bin…].
    #[arg(long, env = pd::ENV_BWRAP, value_parser = pd::parse_bwrap)]
    pub process_bwrap: Option<PathBuf>,
    /// Directories allowed as `file://` images (colon-separated, absolute) [default: any].
    #[arg(long, env = pd::ENV_ROOTS, default_value = "", hide_default_value = true, value_parser = pd::parse_roots)]
    pub process_roots: ::std::vec::Vec<PathBuf>,
    /// Extra host paths visible read-only to sandboxed functions
    /// (colon-separated, absolute).
    #[arg(long, env = pd::ENV_RO_PATHS, default_value = "", hide_default_value = true, value_parser = pd::parse_ro_paths)]
    pub process_ro_paths: ::std::vec::Vec<PathBuf>,
    /// Seccomp filter in the sandbox (true or false).
    #[arg(long, env = pd::ENV_SECCOMP, default_value = "true", action = clap::ArgAction::Set, value_parser = pd::parse_seccomp)]
    pub process_seccomp: bool,
    /// The cgroup (below each hierarchy's root) holding every server's
    /// instance cgroups, each server's in `<parent>/<server id>`; crashed
    /// servers' are removed from it at start.
    #[arg(long, env = pd::ENV_CGROUP_PARENT, default_value = "fnrs", value_parser = pd::parse_cgroup_parent)]
    pub process_cgroup_parent: String,
    /// Most processes in one instance.
    #[arg(long, env = pd::ENV_MAX_PIDS, default_value = "50", value_parser = pd::parse_max_pids)]
    pub max_pids: u32,
    /// Size of a sandboxed function's /tmp in MiB (0 = the fn's memory).
    #[arg(long, env = pd::ENV_TMP_SIZE_MB, default_value = "0", value_parser = pd::parse_tmp_size_mb)]
    pub process_tmp_size_mb: u64,
    /// User id functions run as.
    #[arg(long, env = pd::ENV_UID, default_value = "65534", value_parser = pd::parse_uid)]
    pub process_uid: u32,
    /// Group id functions run as.
    #[arg(long, env = pd::ENV_GID, default_value = "65534", value_parser = pd::parse_gid)]
    pub process_gid: u32,
    /// Open-files ulimit of a function (0 or less: the server's).
    #[arg(long, env = pd::ENV_MAX_OPEN_FILES, default_value = "350", value_parser = pd::parse_max_open_files)]
    pub max_open_files: ::std::option::Option<u64>,
    /// Locked-memory ulimit of a function in bytes (0 or less: the server's).
    #[arg(long, env = pd::ENV_MAX_LOCKED_MEMORY, default_value = "65536", value_parser = pd::parse_max_locked_memory)]
    pub max_locked_memory: ::std::option::Option<u64>,
    /// Pending-signals ulimit of a function (0 or less: the server's).
    #[arg(long, env = pd::ENV_MAX_PENDING_SIGNALS, default_value = "5000", value_parser = pd::parse_max_pending_signals)]
    pub max_pending_signals: ::std::option::Option<u64>,
    /// Message-queue ulimit of a function in bytes (0 or less: the server's).
    #[arg(long, env = pd::ENV_MAX_MESSAGE_QUEUE, default_value = "819200", value_parser = pd::parse_max_message_queue)]
    pub max_message_queue: ::std::option::Option<u64>,
}

impl AgentArgs {
    fn iofs_path(&self) -> PathBuf {
        self.iofs_path
            .clone()
            .unwrap_or_else(fnrs_agent::default_iofs_base)
    }

    fn agent_config(&self, max_request_size: u64, server_id: &str) -> AgentConfig {
        AgentConfig {
            hot_start_timeout: Duration::from_millis(self.hot_start_timeout_msecs),
            max_queue_wait: Duration::from_millis(self.max_queue_wait_msecs),
            hot_poll: Duration::from_millis(self.hot_poll_msecs),
            max_total_memory: self.max_total_memory_bytes,
            iofs_path: self.iofs_path(),
            iofs_tmpfs: self
                .iofs_tmpfs
                .unwrap_or_else(|| {
                    // A server in a container: the engine would not see a
                    // tmpfs mounted in there.
                    fnrs_agent::running_as_root()
                        && std::env::var_os(fnrs_driver_docker::ENV_IOFS_DOCKER_PATH).is_none()
                })
                .then(|| self.iofs_opts.clone()),
            iofs_tmpfs_required: self.iofs_tmpfs == Some(true),
            max_response_size: self.max_response_size,
            max_hdr_response_size: self.max_hdr_response_size,
            max_log_size: self.max_log_size_bytes,
            disable_debug_user_logs: self.disable_debug_user_logs,
            max_calls_per_fn: self.max_calls_per_fn,
            recorder_backlog_bytes: self.recorder_backlog_bytes,
            detached_max_age: Duration::from_secs(self.detached_max_age_secs),
            max_request_size,
            server_id: Some(server_id.to_string()),
            lock_dir: fnrs_agent::default_lock_dir(),
        }
    }

    /// Fn's ulimits as set above.
    fn rlimits(&self) -> fnrs_driver_process::Rlimits {
        fnrs_driver_process::Rlimits {
            nofile: self.max_open_files,
            memlock: self.max_locked_memory,
            sigpending: self.max_pending_signals,
            msgqueue: self.max_message_queue,
        }
    }

    /// The process driver's settings, all from the flags above (each also
    /// its variable); `cgroup_parent` is this server's own.
    fn process_config(&self, cgroup_parent: String) -> ProcessDriverConfig {
        ProcessDriverConfig {
            sandbox: self.process_sandbox,
            network: self.process_network,
            pasta: self.process_pasta.clone(),
            bwrap: self.process_bwrap.clone(),
            pool_size: self.process_pool_size,
            roots: self.process_roots.clone(),
            ro_paths: self.process_ro_paths.clone(),
            max_pids: self.max_pids,
            tmp_size_mb: self.process_tmp_size_mb,
            uid: self.process_uid,
            gid: self.process_gid,
            cgroup_parent,
            rlimits: self.rlimits(),
            seccomp: self.process_seccomp,
        }
    }
}

/// Start the agent with its drivers, and clean what crashed servers left.
pub async fn start_agent(
    args: &AgentArgs,
    max_request_size: u64,
    store: Arc<dyn Datastore>,
) -> anyhow::Result<Arc<Agent>> {
    let server_id = fnrs_model::new_id();
    let config = args.agent_config(max_request_size, &server_id);
    // Held until the agent holds the server's lock: the cgroups exist first.
    let starting = StartingLock::acquire(&config.lock_dir, &server_id)
        .with_context(|| format!("locking {}", config.lock_dir.display()))?;
    let root = &args.process_cgroup_parent;
    let process = ProcessDriver::new(args.process_config(format!("{root}/{server_id}")))
        .map_err(|e| anyhow::anyhow!("process driver: {e}"))?;
    let docker = docker_driver(args, &server_id, &config.lock_dir)?;
    // The process driver runs `file://` images, Docker everything else.
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(process), Arc::new(docker)];
    let agent = Agent::start(config, store, drivers)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    drop(starting);
    let not_cleaned = clean_dead_servers(root, &server_id).await;
    agent.remove_dead_locks(&not_cleaned).await;
    match agent.resume_pending().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            calls = n,
            "resuming detached calls accepted before a restart"
        ),
        Err(e) => tracing::error!(error = %e, "reading pending detached calls failed"),
    }
    Ok(agent)
}

/// The Docker driver (settings from Fn's `FN_*`/`DOCKER_HOST` variables). It
/// connects on first use, so fnrs starts without an engine: calls of
/// container images then answer 503 and `/health` says why.
fn docker_driver(
    args: &AgentArgs,
    server_id: &str,
    lock_dir: &std::path::Path,
) -> anyhow::Result<DockerDriver> {
    let mut dc = DockerDriverConfig::from_lookup(|k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("docker driver: {e}"))?;
    dc.server_id = server_id.to_string();
    // The agent's iofs paths are under its (default, canonical) base.
    if let Some((_, docker_base)) = dc.iofs_translate.take() {
        let base = args.iofs_path();
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        dc.iofs_translate = Some((base, docker_base));
    }
    // Fn's limits apply to containers too: the flags win over the variables.
    dc.max_pids = u64::from(args.max_pids);
    let r = args.rlimits();
    dc.ulimits.nofile = r.nofile;
    dc.ulimits.memlock = r.memlock;
    dc.ulimits.sigpending = r.sigpending;
    dc.ulimits.msgqueue = r.msgqueue;
    let lock_dir = lock_dir.to_path_buf();
    // A live server holds its lock from before its first container on: the
    // containers of any other server id (lock file or not) are leftovers.
    dc.is_live = Arc::new(move |id| fnrs_agent::server_is_live(&lock_dir, id));
    DockerDriver::new(dc).map_err(|e| anyhow::anyhow!("docker driver: {e}"))
}

/// The variables only the Docker driver reads (no flag: it parses them
/// itself), for `fnrs serve --help`.
pub fn docker_variables_help() -> String {
    use fnrs_driver_docker as d;
    let vars = [
        d::ENV_DOCKER_HOST,
        d::ENV_DOCKER_AUTH,
        d::ENV_DOCKER_NETWORKS,
        d::ENV_DISABLE_READONLY_ROOTFS,
        d::ENV_DISABLE_UNPRIVILEGED_CONTAINERS,
        d::ENV_MAX_TMPFS_INODES,
        d::ENV_MAX_FS_SIZE_MB,
        d::ENV_IOFS_DOCKER_PATH,
        d::ENV_HOT_PULL_TIMEOUT_MSECS,
        d::ENV_IMAGE_ENABLE_VOLUME,
        d::ENV_FREEZE_IDLE_MSECS,
    ];
    format!(
        "Container images (the Docker driver) also read, as environment variables only \
         (see the README): {}.",
        vars.join(", ")
    )
}

/// `<lock dir>/<server id>.starting`, locked (flock) by a server from
/// before it creates its cgroups until the agent holds `<server id>.lock`;
/// removed when dropped.
struct StartingLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl StartingLock {
    fn acquire(dir: &std::path::Path, server_id: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{server_id}.starting"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // Blocking: another server may be testing it for a moment.
        file.lock()?;
        Ok(StartingLock { path, _file: file })
    }
}

impl Drop for StartingLock {
    fn drop(&mut self) {
        // Removed while still locked: no one judges this server by it after.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether some process holds a flock on `path` (a missing file: no).
fn lock_held(path: &std::path::Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) else {
        return false;
    };
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Whether server `id` is running: it holds its `.starting` lock (checked
/// first: it lets go of it only once it holds `.lock`) or its `.lock`.
fn server_is_running(locks: &std::path::Path, id: &str) -> bool {
    lock_held(&locks.join(format!("{id}.starting"))) || lock_held(&locks.join(format!("{id}.lock")))
}

/// Remove the instance cgroups of servers that are not running any more
/// (neither lock held, whether or not the lock files exist), killing what
/// is left in them. Returns the servers whose cgroups could not be removed.
async fn clean_dead_servers(root: &str, me: &str) -> std::collections::BTreeSet<String> {
    let mut failed = std::collections::BTreeSet::new();
    let locks = fnrs_agent::default_lock_dir();
    let mut dead = std::collections::BTreeSet::new();
    for dir in cgroup_roots(root) {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !e.path().is_dir() || name == me {
                continue;
            }
            if !server_is_running(&locks, &name) {
                dead.insert(name);
            }
        }
    }
    for id in dead {
        match fnrs_driver_process::cleanup_cgroup_parent(&format!("{root}/{id}")).await {
            Ok(n) => {
                // A server that crashed while starting left this.
                let _ = std::fs::remove_file(locks.join(format!("{id}.starting")));
                tracing::info!(server = %id, instances = n, "removed the cgroups of a stopped server")
            }
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "removing a stopped server's cgroups failed");
                failed.insert(id);
            }
        }
    }
    failed
}

/// End the agent (every instance) and remove this server's cgroup parent.
pub async fn stop_agent(agent: &Arc<Agent>, args: &AgentArgs, grace: Duration) {
    agent.shutdown(grace).await;
    let parent = format!("{}/{}", args.process_cgroup_parent, agent.server_id());
    if let Err(e) = fnrs_driver_process::cleanup_cgroup_parent(&parent).await {
        tracing::warn!(error = %e, "removing this server's cgroups failed");
    }
}

/// `/sys/fs/cgroup/<controller>/<root>` (v1) and `/sys/fs/cgroup/<root>` (v2).
fn cgroup_roots(root: &str) -> Vec<PathBuf> {
    let base = std::path::Path::new("/sys/fs/cgroup");
    let mut out = vec![base.join(root)];
    if let Ok(rd) = std::fs::read_dir(base) {
        for e in rd.flatten() {
            out.push(e.path().join(root));
        }
    }
    out.retain(|p| p.is_dir());
    out
}

/// Lets the API call through the local agent.
pub struct AgentInvoker(pub Arc<Agent>);

#[async_trait]
impl Invoker for AgentInvoker {
    async fn invoke(&self, req: InvokeRequest) -> Result<http::Response<BoxBody>, InvokeError> {
        let call = InvokeCall {
            app: req.app,
            func: req.func,
            trigger: req.trigger,
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
            detached: req.detached,
        };
        self.0.invoke(call).await.map_err(|e| InvokeError {
            call_id: e.call_id,
            error: e.error,
        })
    }

    async fn health(&self) -> serde_json::Value {
        self.0.health().await
    }

    async fn check_image(&self, image: &str) -> Result<(), Error> {
        self.0.check_image(image).await
    }

    fn metrics_text(&self) -> String {
        self.0.metrics_text()
    }
}

/// The invoke path's lookups, from the read cache.
pub struct CacheLookup<S>(pub Arc<CachedStore<S>>);

#[async_trait]
impl<S: Datastore> Lookup for CacheLookup<S> {
    async fn app(&self, app_id: &str) -> Result<Arc<App>, Error> {
        self.0.cached_app(app_id).await
    }
    async fn app_by_name(&self, name: &str) -> Result<Arc<App>, Error> {
        self.0.cached_app_by_name(name).await
    }
    async fn func(&self, fn_id: &str) -> Result<Arc<Fn>, Error> {
        self.0.cached_fn(fn_id).await
    }
    async fn http_trigger(&self, app_id: &str, source: &str) -> Result<Arc<Trigger>, Error> {
        self.0
            .cached_trigger_by_source(app_id, "http", source)
            .await
    }
}

/// Shared by serve's wiring: wrap the store in the read cache.
pub fn cached(store: Arc<dyn Datastore>) -> (Arc<dyn Datastore>, Arc<dyn Lookup>) {
    let cache = Arc::new(CachedStore::new(store));
    (cache.clone(), Arc::new(CacheLookup(cache)))
}
