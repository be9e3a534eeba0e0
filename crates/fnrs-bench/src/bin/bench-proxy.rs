//! A bare HTTP proxy from TCP to a function's unix socket, built from the
//! same parts as fnrs's hot path (tokio, hyper 1 server and client) and
//! nothing else: no lookup, no agent, no records, no logs. The benchmark
//! measures it next to the function alone and fnrs, so the table shows what
//! the two HTTP hops cost on their own on this machine.
//!
//! `bench-proxy --listen 127.0.0.1:0 --socket unix:/path/lsnr.sock [...]`
//! prints `proxy listening on ADDR`, then forwards every request as
//! `POST /call` (with `Fn-Call-Id` and `Fn-Deadline`, as fnrs does) over a
//! kept connection per instance, taking a free connection for each call.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixStream};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

#[derive(Parser, Debug)]
struct Args {
    /// Where to listen (TCP).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// A function's socket, `unix:/path` (repeat for several instances).
    #[arg(long = "socket", required = true)]
    sockets: Vec<String>,
    /// Worker threads of the runtime (0: tokio's default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Idle connections to the function instances.
struct Upstreams {
    idle: std::sync::Mutex<VecDeque<SendRequest<Body>>>,
    free: tokio::sync::Notify,
    seq: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    rt.enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut idle = VecDeque::new();
    for s in &args.sockets {
        let path = s.strip_prefix("unix:").unwrap_or(s);
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("connect {path}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        idle.push_back(sender);
    }
    let up = Arc::new(Upstreams {
        idle: std::sync::Mutex::new(idle),
        free: tokio::sync::Notify::new(),
        seq: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(&args.listen).await?;
    println!("proxy listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let up = Arc::clone(&up);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let up = Arc::clone(&up);
                async move { Ok::<_, Infallible>(forward(&up, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn forward(up: &Upstreams, req: Request<Incoming>) -> Response<Body> {
    let mut sender = loop {
        let free = up.free.notified();
        if let Some(s) = up.idle.lock().expect("lock").pop_front() {
            break s;
        }
        free.await;
    };
    let (parts, body) = req.into_parts();
    let mut out = Request::new(body.boxed_unsync());
    *out.method_mut() = http::Method::POST;
    *out.uri_mut() = http::Uri::from_static("/call");
    *out.headers_mut() = parts.headers;
    let h = out.headers_mut();
    h.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    let id = up.seq.fetch_add(1, Ordering::Relaxed);
    if let Ok(v) = HeaderValue::from_str(&format!("bench-proxy-{id}")) {
        h.insert("fn-call-id", v);
    }
    h.insert(
        "fn-deadline",
        HeaderValue::from_static("2100-01-01T00:00:00Z"),
    );
    let result = match sender.ready().await {
        Ok(()) => sender.send_request(out).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(resp) => {
            // The connection is free again once the answer's head is in; a
            // streamed body holds it until it ends (hyper queues the next
            // request behind it), which is fine for this floor.
            up.idle.lock().expect("lock").push_back(sender);
            up.free.notify_one();
            resp.map(|b| b.boxed_unsync())
        }
        Err(e) => {
            eprintln!("bench-proxy: upstream failed: {e}");
            let mut r = Response::new(Empty::new().map_err(|n| match n {}).boxed_unsync());
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}
