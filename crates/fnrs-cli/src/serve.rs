//! `fnrs serve`: configuration (Fn's `FN_*` variables, each also a flag),
//! wiring of store, cache, invoker and API, and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fnrs_api::{ApiConfig, ApiState, Invoker};
use fnrs_datastore::Datastore;
use tokio_util::sync::CancellationToken;

/// HTTP port (also part of the id generator's machine id).
pub const ENV_PORT: &str = "FN_PORT";
/// Address to listen on (fnrs's own; Fn always binds all interfaces).
pub const ENV_LISTEN: &str = "FN_LISTEN";
/// Datastore URL: `sqlite3:///path`, `sqlite:///path`, `postgres://…`, `postgresql://…`.
pub const ENV_DB_URL: &str = "FN_DB_URL";
/// Attempts to reach the database at start, one second apart.
pub const ENV_DS_DB_PING_MAX_RETRIES: &str = "FN_DS_DB_PING_MAX_RETRIES";
/// Log level: trace, debug, info, warn, error (or a tracing filter).
pub const ENV_LOG_LEVEL: &str = "FN_LOG_LEVEL";
/// Log format: text or json.
pub const ENV_LOG_FORMAT: &str = "FN_LOG_FORMAT";
/// Largest request body in bytes; 0 = no limit.
pub const ENV_MAX_REQUEST_SIZE: &str = "FN_MAX_REQUEST_SIZE";
/// Base URL of the invoke and trigger endpoint annotations.
pub const ENV_PUBLIC_LB_URL: &str = "FN_PUBLIC_LB_URL";
/// CORS: allowed origins, comma-separated (`*` = any); unset = no CORS.
pub const ENV_API_CORS_ORIGINS: &str = "FN_API_CORS_ORIGINS";
/// CORS: allowed request headers, comma-separated.
pub const ENV_API_CORS_HEADERS: &str = "FN_API_CORS_HEADERS";
/// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
pub const ENV_SHUTDOWN_TIMEOUT: &str = "FN_SHUTDOWN_TIMEOUT";
/// Time a client has to send a request head (Fn's name; seconds or a Go
/// duration such as `2m5s` or `500ms`; 0 = no limit).
pub const ENV_REQUEST_HEADER_READ_TIMEOUT: &str = "FN_REQUEST_HEADER_READ_TIMEOUT";
/// Time a kept-alive connection may wait for its next request (Fn's name;
/// seconds or a Go duration; 0 = no limit).
pub const ENV_HTTP_IDLE_TIMEOUT: &str = "FN_HTTP_IDLE_TIMEOUT";
/// Most open client connections (0 = no limit).
pub const ENV_MAX_CONNECTIONS: &str = "FN_MAX_CONNECTIONS";
/// Bearer token the API requires (every request but `/`, `/version`,
/// `/health`); also as `FN_API_TOKEN_FILE`.
pub const ENV_API_TOKEN: &str = "FN_API_TOKEN";
/// Serve the API without a token on an address other than loopback.
pub const ENV_API_ALLOW_UNAUTHENTICATED: &str = "FN_API_ALLOW_UNAUTHENTICATED";

/// A duration as Fn reads its HTTP timeouts: whole seconds (`30`), or a Go
/// duration (`1m30s`, `1.5h`, `250ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || format!("{s:?} is not a duration (seconds, or e.g. 1m30s, 500ms)");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `fnrs serve`, from flags or Fn's environment variables.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = crate::agent::docker_variables_help())]
pub struct ServeArgs {
    /// HTTP port.
    #[arg(long, env = ENV_PORT, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on (Fn binds every interface; fnrs binds loopback
    /// unless told otherwise, e.g. `--listen 0.0.0.0`).
    #[arg(long, env = ENV_LISTEN, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// Datastore URL [default: sqlite3://<cwd>/data/fn.db].
    #[arg(long, env = ENV_DB_URL)]
    pub db_url: Option<String>,
    /// Attempts to reach the database at start, one second apart.
    #[arg(long, env = ENV_DS_DB_PING_MAX_RETRIES, default_value_t = 10)]
    pub db_ping_max_retries: u32,
    /// Log level (trace, debug, info, warn, error) or a tracing filter.
    #[arg(long, env = ENV_LOG_LEVEL, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest request body in bytes (0 = no limit).
    #[arg(long, env = ENV_MAX_REQUEST_SIZE, default_value_t = 0)]
    pub max_request_size: u64,
    /// Base URL for the invokeEndpoint/httpEndpoint annotations
    /// [default: http://<Host header of the request>].
    #[arg(long, env = ENV_PUBLIC_LB_URL)]
    pub public_lb_url: Option<String>,
    /// CORS: allowed origins, comma-separated (`*` = any) [default: no CORS].
    #[arg(long, env = ENV_API_CORS_ORIGINS)]
    pub api_cors_origins: Option<String>,
    /// CORS: allowed request headers, comma-separated.
    #[arg(long, env = ENV_API_CORS_HEADERS)]
    pub api_cors_headers: Option<String>,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, env = ENV_SHUTDOWN_TIMEOUT, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Time a client has to send a request head: from accept on a new
    /// connection, from the request's first byte on a kept-alive one
    /// (seconds or e.g. `500ms`; 0 = no limit).
    #[arg(long, env = ENV_REQUEST_HEADER_READ_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub request_header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request (seconds
    /// or e.g. `2m`; 0 = no limit).
    #[arg(long, env = ENV_HTTP_IDLE_TIMEOUT, default_value = "90s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,
    /// Most open client connections; more are answered 503 and closed at
    /// once (0 = no limit; keep it below the open-files limit).
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Token the API requires as `Authorization: Bearer <token>` on every
    /// request but /, /version and /health (printable ASCII, no spaces).
    /// Prefer the variable or FN_API_TOKEN_FILE to the flag, which other
    /// local users can see.
    #[arg(long, env = ENV_API_TOKEN, hide_env_values = true, value_parser = parse_token)]
    pub api_token: Option<fnrs_api::BearerToken>,
    /// Serve the API without a token on an address other than loopback
    /// (anyone who reaches it may manage apps and functions).
    #[arg(long, env = ENV_API_ALLOW_UNAUTHENTICATED, default_value_t = false)]
    pub api_allow_unauthenticated: bool,
    #[command(flatten)]
    pub agent: crate::agent::AgentArgs,
}

impl ServeArgs {
    /// `FN_DB_URL`, or Fn's default `sqlite3://<cwd>/data/fn.db`.
    pub fn db_url(&self) -> anyhow::Result<String> {
        match &self.db_url {
            Some(u) if !u.is_empty() => Ok(u.clone()),
            _ => {
                let cwd = std::env::current_dir().context("reading the working directory")?;
                Ok(format!(
                    "sqlite3://{}",
                    cwd.join("data").join("fn.db").display()
                ))
            }
        }
    }
}

/// Never fails, so that clap never repeats the value in an error; the token
/// is checked in [`check_api_access`].
fn parse_token(s: &str) -> Result<fnrs_api::BearerToken, std::convert::Infallible> {
    Ok(fnrs_api::BearerToken::new(s))
}

/// The API's token must be usable, and the API is served without one only
/// on loopback unless explicitly allowed. Messages never show the token.
fn check_api_access(args: &ServeArgs) -> anyhow::Result<()> {
    if let Some(t) = &args.api_token {
        if !fnrs_model::validate::is_valid_token(t.expose()) {
            anyhow::bail!(
                "{ENV_API_TOKEN} must be 1 to {} printable ASCII characters without spaces",
                fnrs_model::validate::MAX_TOKEN_BYTES
            );
        }
        return Ok(());
    }
    let listen = args.listen.to_canonical();
    if listen.is_loopback() {
        return Ok(());
    }
    if !args.api_allow_unauthenticated {
        anyhow::bail!(
            "refusing to serve the API without a token on {listen}: set {ENV_API_TOKEN} \
             (or {ENV_API_TOKEN}_FILE) to require one, or set \
             {ENV_API_ALLOW_UNAUTHENTICATED}=true to let anyone who reaches {listen} manage it"
        );
    }
    tracing::warn!(
        %listen,
        "the API is served unauthenticated beyond loopback ({ENV_API_ALLOW_UNAUTHENTICATED})"
    );
    Ok(())
}

/// A comma-separated list, trimmed, without empty items.
fn split_list(v: Option<&str>) -> Vec<String> {
    v.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Sets up logging to stderr as configured.
pub fn init_logging(args: &ServeArgs) {
    let level = match args.log_level.to_ascii_lowercase().as_str() {
        "fatal" | "panic" => "error".to_owned(),
        "warning" => "warn".to_owned(),
        other => other.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Opens the datastore named by the URL, retrying while it does not answer.
async fn open_store(args: &ServeArgs) -> anyhow::Result<Arc<dyn Datastore>> {
    let url = args.db_url()?;
    open_store_url(&url, args.db_ping_max_retries).await
}

async fn open_store_url(url: &str, retries: u32) -> anyhow::Result<Arc<dyn Datastore>> {
    let opts = fnrs_datastore::SqlOptions {
        ping_max_retries: retries,
        ..Default::default()
    };
    let store = fnrs_datastore::SqlStore::connect(url, &opts)
        .await
        .with_context(|| format!("opening the datastore {}", fnrs_datastore::redact(url)))?;
    tracing::info!(backend = ?store.backend(), db = %fnrs_datastore::redact(url), "datastore open");
    Ok(Arc::new(store))
}

/// Installs the Prometheus recorder (once per process).
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const SECONDS_BUCKETS: &[f64] = &[
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// Listens for SIGTERM and SIGINT from the moment it is made (so that a
/// signal sent right after the address is printed is not lost).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = self.int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
    }
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    check_api_access(&args)?;
    let shutdown = CancellationToken::new();
    let handle = install_metrics()?;
    {
        let handle = handle.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        });
    }

    let store = open_store(&args).await?;
    // Writes go through the cache so that it never serves stale lookups.
    let (store, lookup) = crate::agent::cached(store);
    let agent =
        crate::agent::start_agent(&args.agent, args.max_request_size, store.clone()).await?;
    let invoker: Arc<dyn Invoker> = Arc::new(crate::agent::AgentInvoker(agent.clone()));

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.listen, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.listen, args.port))?;
    let bound = listener.local_addr()?;
    let ids = Arc::new(fnrs_model::IdGenerator::for_port(bound.port()));
    let state = Arc::new(ApiState {
        store,
        lookup,
        invoker,
        config: ApiConfig {
            public_lb_url: args.public_lb_url.clone().filter(|u| !u.is_empty()),
            max_request_size: args.max_request_size,
            cors_origins: split_list(args.api_cors_origins.as_deref()),
            cors_headers: split_list(args.api_cors_headers.as_deref()),
            api_token: args.api_token.clone(),
        },
        ids,
        metrics: Some(handle),
    });
    let app = fnrs_api::router(state);

    // Machine-readable: tests and scripts read the bound address from here.
    let signals = ShutdownSignals::new()?;
    println!("fnrs listening on {bound}");
    tracing::info!(addr = %bound, version = env!("CARGO_PKG_VERSION"), "fnrs serving");

    {
        let token = shutdown.clone();
        let draining = agent.clone();
        tokio::spawn(async move {
            signals.recv().await;
            // New calls (also on kept-alive connections) get 503; running ones finish.
            draining.stop_accepting();
            token.cancel();
        });
    }
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    let limits = crate::conn::ConnLimits {
        header_timeout: nonzero(args.request_header_read_timeout),
        idle_timeout: nonzero(args.http_idle_timeout),
        max_connections: (args.max_connections > 0).then_some(args.max_connections),
    };
    let mut server = std::pin::pin!(crate::conn::serve(listener, app, limits, shutdown.clone()));
    tokio::select! {
        () = &mut server => {}
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_secs(args.shutdown_timeout)).await;
        } => tracing::warn!(grace_secs = args.shutdown_timeout, "grace period over, closing remaining connections"),
    }
    shutdown.cancel();
    // Sync calls had the grace period above (they are HTTP requests); give
    // detached ones a little more, then end every instance. A detached call
    // cut short runs again at the next start.
    crate::agent::stop_agent(
        &agent,
        &args.agent,
        Duration::from_secs(args.shutdown_timeout.min(5)),
    )
    .await;
    tracing::info!("fnrs stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_fn_reads_them() {
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("30"), Duration::from_secs(30));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("2m5s"), Duration::from_secs(125));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("10us"), Duration::from_micros(10));
        for bad in ["", "-1s", "5x", "ms", "1.2.3s", "s5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
