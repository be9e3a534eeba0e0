//! The `fnrs` binary started on 127.0.0.1:0 for black-box tests.
//!
//! [`TestServer::start`] runs `fnrs serve` with a temporary data directory,
//! reads the address it bound from its output (`fnrs listening on ADDR`),
//! and waits until `/version` answers. Dropping it stops the server (SIGTERM,
//! then SIGKILL); [`TestServer::kill9`] and [`TestServer::restart`] simulate
//! a crash and a restart on the same data.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The line prefix `fnrs serve` prints once it listens.
pub const LISTENING_PREFIX: &str = "fnrs listening on ";

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra environment (applied after the defaults, so it can override them).
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// `FN_DB_URL`; default: a SQLite file in the data directory.
    pub db_url: Option<String>,
}

impl ServerOptions {
    /// Options with one more environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Options with a database URL.
    pub fn db_url(mut self, url: impl Into<String>) -> Self {
        self.db_url = Some(url.into());
        self
    }
}

/// A running `fnrs serve`.
pub struct TestServer {
    bin: PathBuf,
    opts: ServerOptions,
    data: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
}

impl TestServer {
    /// Starts `bin serve` on 127.0.0.1:0 with a fresh data directory.
    pub async fn start(bin: impl AsRef<Path>, opts: ServerOptions) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("fnrs-test-").tempdir()?;
        let mut s = Self {
            bin: bin.as_ref().to_owned(),
            opts,
            data,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let db_url =
            self.opts.db_url.clone().unwrap_or_else(|| {
                format!("sqlite3://{}", self.data.path().join("fn.db").display())
            });
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(&self.opts.args)
            .current_dir(self.data.path())
            .env("FN_PORT", "0")
            .env("FN_LISTEN", "127.0.0.1")
            .env("FN_DB_URL", db_url)
            .env("FN_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let (tx, rx) = mpsc::channel();
        forward(child.stdout.take(), Some(tx));
        forward(child.stderr.take(), None);
        self.child = Some(child);
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                self.stop();
                bail!("fnrs did not print its address within 60 s");
            }
        };
        self.addr = addr;
        let client = reqwest::Client::new();
        let url = format!("{}/version", self.url());
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..600 {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
        bail!("fnrs at {addr} did not answer /version")
    }

    /// The address the server bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's working and data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM, then SIGKILL after 10 s; returns its
    /// exit status if it exited by itself.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the server again on the same data directory (after
    /// [`Self::kill9`] or [`Self::stop`]); it gets a new port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies a child's output to the test's stderr (captured by the harness),
/// reporting the listening address on `tx` when it shows up.
fn forward(out: Option<impl Read + Send + 'static>, tx: Option<mpsc::Sender<SocketAddr>>) {
    let Some(out) = out else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let (Some(tx), Some(rest)) = (&tx, line.strip_prefix(LISTENING_PREFIX))
                && let Ok(addr) = rest.trim().parse::<SocketAddr>()
            {
                let _ = tx.send(addr);
            }
            eprintln!("[fnrs] {line}");
        }
    });
}
