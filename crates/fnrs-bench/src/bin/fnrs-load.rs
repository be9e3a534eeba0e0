//! `fnrs-load`: a small HTTP/1.1 keep-alive load client (hyper 1) for the
//! fnrs benchmark. One connection per client task; clients are spread over
//! `--threads` current-thread runtimes. It talks to TCP (`tcp:HOST:PORT`)
//! or unix sockets (`unix:/path`), so the same client measures fnrs and the
//! function's own socket (the floor). Each run is bounded by `--requests`
//! and `--duration` (and a hard cap of `--max-seconds`). It prints one JSON
//! object: latency and time-to-first-byte percentiles, throughput and, with
//! `--server-pid`, the server's CPU time per call and RSS at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use fnrs_bench::{CLK_TCK, Summary, cpu_ticks, status_kb, summarize};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::Barrier;

#[derive(Debug, Parser)]
#[command(about = "HTTP/1.1 keep-alive load client of the fnrs benchmark")]
struct Args {
    /// Where to connect: tcp:HOST:PORT or unix:/path (repeat: client i uses
    /// target i mod n). Only loopback hosts are accepted.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Request method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request path (and query).
    #[arg(long, default_value = "/")]
    path: String,
    /// Request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Extra header NAME:VALUE (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Add Fn-Call-Id (unique) and Fn-Deadline, as a server does when it
    /// calls a function over its socket.
    #[arg(long)]
    fn_headers: bool,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Threads (current-thread runtimes) the clients are spread over.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured requests in total (0 = until --duration).
    #[arg(long, default_value_t = 0)]
    requests: u64,
    /// Measured time in seconds (0 = until --requests).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Unmeasured requests per client before the measured phase.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Pause before each measured request of a client, in ms.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Pid of the server: report its CPU time per call and its RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Status that counts as success.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Include each measured latency (µs) in the output.
    #[arg(long)]
    samples: bool,
    /// Include the headers of the last response in the output.
    #[arg(long)]
    show_headers: bool,
    /// Hard cap of the whole run, in seconds.
    #[arg(long, default_value_t = 300.0)]
    max_seconds: f64,
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(String),
    Unix(String),
}

impl Target {
    fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(p.to_owned()));
        }
        let Some(addr) = s.strip_prefix("tcp:") else {
            bail!("target {s}: use tcp:HOST:PORT or unix:/path");
        };
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            bail!("target {s}: only loopback addresses are allowed");
        }
        Ok(Self::Tcp(addr.to_owned()))
    }

    fn host_header(&self) -> String {
        match self {
            Self::Tcp(a) => a.clone(),
            Self::Unix(_) => "localhost".to_owned(),
        }
    }
}

/// What one client sends.
struct Plan {
    method: Method,
    path: String,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    fn_headers: bool,
    expect_status: u16,
    interval: Duration,
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    latency_ns: Vec<u64>,
    ttfb_ns: Vec<u64>,
    errors: u64,
    bytes: u64,
    statuses: BTreeMap<u16, u64>,
    last_error: Option<String>,
    last_headers: Option<BTreeMap<String, String>>,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> anyhow::Result<Sender> {
    macro_rules! handshake {
        ($stream:expr) => {{
            let (sender, conn) = http1::handshake(TokioIo::new($stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        }};
    }
    Ok(match target {
        Target::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            s.set_nodelay(true)?;
            handshake!(s)
        }
        Target::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("connecting to {path}"))?;
            handshake!(s)
        }
    })
}

struct Outcome {
    status: u16,
    ttfb: Duration,
    total: Duration,
    bytes: u64,
    headers: http::HeaderMap,
}

async fn one(
    sender: &mut Sender,
    plan: &Plan,
    host: &str,
    call_id: &str,
) -> anyhow::Result<Outcome> {
    sender.ready().await?;
    let mut b = Request::builder()
        .method(plan.method.clone())
        .uri(&plan.path)
        .header(http::header::HOST, host);
    for (n, v) in &plan.headers {
        b = b.header(n, v);
    }
    if plan.fn_headers {
        b = b
            .header("fn-call-id", call_id)
            .header("fn-deadline", "2099-01-01T00:00:00.000Z");
    }
    let req = b.body(Full::new(plan.body.clone()))?;
    let t0 = Instant::now();
    let resp = sender.send_request(req).await?;
    let t_head = t0.elapsed();
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let mut ttfb = None;
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if ttfb.is_none() && !data.is_empty() {
                ttfb = Some(t0.elapsed());
            }
            bytes += data.len() as u64;
        }
    }
    Ok(Outcome {
        status,
        ttfb: ttfb.unwrap_or(t_head),
        total: t0.elapsed(),
        bytes,
        headers: parts.headers,
    })
}

struct Shared {
    plan: Plan,
    args_requests: u64,
    duration: Option<Duration>,
    hard_deadline: Instant,
    tickets: AtomicU64,
    start: Barrier,
    end: Barrier,
    warmup: u64,
    show_headers: bool,
}

impl Shared {
    fn take_ticket(&self) -> bool {
        if self.args_requests == 0 {
            return true;
        }
        self.tickets.fetch_add(1, Ordering::Relaxed) < self.args_requests
    }
}

async fn client(idx: usize, target: Target, sh: Arc<Shared>) -> Tally {
    let mut t = Tally::default();
    let host = target.host_header();
    let mut sender = match connect(&target).await {
        Ok(s) => Some(s),
        Err(e) => {
            t.errors += 1;
            t.last_error = Some(format!("{e:#}"));
            None
        }
    };
    let mut seq = 0u64;
    for _ in 0..sh.warmup {
        if let Some(s) = sender.as_mut() {
            seq += 1;
            if let Err(e) = one(s, &sh.plan, &host, &format!("warm{idx}-{seq}")).await {
                t.last_error = Some(format!("warm-up: {e:#}"));
                sender = connect(&target).await.ok();
            }
        }
    }
    sh.start.wait().await;
    let deadline = sh
        .duration
        .map(|d| Instant::now() + d)
        .unwrap_or(sh.hard_deadline)
        .min(sh.hard_deadline);
    let mut reconnects = 0;
    while Instant::now() < deadline && sh.take_ticket() {
        if !sh.plan.interval.is_zero() {
            tokio::time::sleep(sh.plan.interval).await;
        }
        let Some(s) = sender.as_mut() else { break };
        seq += 1;
        match one(s, &sh.plan, &host, &format!("bench{idx}-{seq}")).await {
            Ok(o) => {
                *t.statuses.entry(o.status).or_default() += 1;
                if o.status == sh.plan.expect_status {
                    t.latency_ns.push(o.total.as_nanos() as u64);
                    t.ttfb_ns.push(o.ttfb.as_nanos() as u64);
                    t.bytes += o.bytes;
                } else {
                    t.errors += 1;
                }
                if sh.show_headers {
                    t.last_headers = Some(
                        o.headers
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                t.errors += 1;
                t.last_error = Some(format!("{e:#}"));
                reconnects += 1;
                if reconnects > 100 {
                    break;
                }
                sender = connect(&target).await.ok();
            }
        }
    }
    // Hold the connection until every client is done, so the server's RSS
    // is read under load.
    sh.end.wait().await;
    t
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.requests == 0 && a.duration <= 0.0 {
        bail!("give --requests or --duration (or both)");
    }
    if a.clients == 0 || a.threads == 0 {
        bail!("--clients and --threads must be at least 1");
    }
    let targets = a
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let method = Method::from_bytes(a.method.as_bytes()).map_err(|_| anyhow!("bad method"))?;
    let mut headers = Vec::new();
    for h in &a.headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("header {h}: use NAME:VALUE"))?;
        headers.push((
            HeaderName::from_bytes(n.trim().as_bytes())?,
            HeaderValue::from_str(v.trim())?,
        ));
    }
    let started = Instant::now();
    let sh = Arc::new(Shared {
        plan: Plan {
            method,
            path: a.path.clone(),
            body: Bytes::from(a.body.clone()),
            headers,
            fn_headers: a.fn_headers,
            expect_status: a.expect_status,
            interval: Duration::from_millis(a.interval_ms),
        },
        args_requests: a.requests,
        duration: (a.duration > 0.0).then(|| Duration::from_secs_f64(a.duration)),
        hard_deadline: started + Duration::from_secs_f64(a.max_seconds),
        tickets: AtomicU64::new(0),
        start: Barrier::new(a.clients + 1),
        end: Barrier::new(a.clients + 1),
        warmup: a.warmup,
        show_headers: a.show_headers,
    });

    let threads = a.threads.min(a.clients);
    let mut handles = Vec::new();
    for th in 0..threads {
        let sh = Arc::clone(&sh);
        let mine: Vec<(usize, Target)> = (0..a.clients)
            .filter(|i| i % threads == th)
            .map(|i| (i, targets[i % targets.len()].clone()))
            .collect();
        handles.push(std::thread::spawn(move || -> anyhow::Result<Vec<Tally>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let tasks: Vec<_> = mine
                    .into_iter()
                    .map(|(i, t)| tokio::spawn(client(i, t, Arc::clone(&sh))))
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await?);
                }
                Ok(out)
            })
        }));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pid = a.server_pid;
    let (elapsed, cpu, rss_kb) = rt.block_on(async {
        sh.start.wait().await;
        let t0 = Instant::now();
        let c0 = pid.map(cpu_ticks).transpose()?;
        sh.end.wait().await;
        let elapsed = t0.elapsed();
        let c1 = pid.map(cpu_ticks).transpose()?;
        let rss = pid.map(|p| status_kb(p, "VmRSS")).transpose()?;
        anyhow::Ok((elapsed, c0.zip(c1).map(|(a, b)| b - a), rss))
    })?;

    let mut all = Tally::default();
    for h in handles {
        let tallies = h
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
        for t in tallies {
            all.latency_ns.extend(t.latency_ns);
            all.ttfb_ns.extend(t.ttfb_ns);
            all.errors += t.errors;
            all.bytes += t.bytes;
            for (s, n) in t.statuses {
                *all.statuses.entry(s).or_default() += n;
            }
            all.last_error = all.last_error.or(t.last_error);
            all.last_headers = all.last_headers.or(t.last_headers);
        }
    }
    let samples: Option<Vec<f64>> = a
        .samples
        .then(|| all.latency_ns.iter().map(|&n| n as f64 / 1000.0).collect());
    let count = all.latency_ns.len();
    let latency: Summary = summarize(&mut all.latency_ns);
    let ttfb: Summary = summarize(&mut all.ttfb_ns);
    let secs = elapsed.as_secs_f64();
    let mut out = json!({
        "clients": a.clients,
        "threads": threads,
        "count": count,
        "errors": all.errors,
        "elapsed_s": secs,
        "rps": if secs > 0.0 { count as f64 / secs } else { 0.0 },
        "bytes": all.bytes,
        "latency": latency,
        "ttfb": ttfb,
        "statuses": all.statuses,
        "last_error": all.last_error,
    });
    if let Some(ticks) = cpu {
        let cpu_us = ticks as f64 * 1e6 / CLK_TCK as f64;
        out["server"] = json!({
            "cpu_us": cpu_us,
            "cpu_us_per_call": if count > 0 { cpu_us / count as f64 } else { 0.0 },
            "cpu_share": if secs > 0.0 { cpu_us / 1e6 / secs } else { 0.0 },
            "rss_kb_end": rss_kb,
        });
    }
    if let Some(s) = samples {
        out["samples_us"] = json!(s);
    }
    if let Some(h) = all.last_headers {
        out["last_headers"] = serde_json::to_value(h)?;
    }
    println!("{out}");
    Ok(())
}
