//! A fast in-process driver: its "instances" are tasks serving the real
//! http-stream contract with the Rust FDK in a real iofs directory. Each
//! call's answer is `<call id> <body>`; each call writes `got <body>` to the
//! instance's stderr; a body `sleep <ms>` makes the answer wait. Shared by the
//! agent's tests and its `hot_call` bench.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fnrs_driver::{Driver, DriverError, ExitInfo, Instance, InstanceIo, InstanceSpec};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// How a fake instance behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serves the contract.
    Serve,
    /// Never creates its socket.
    Silent,
    /// Exits at once.
    Crash,
}

pub struct FakeDriver {
    mode: Mode,
    /// How many instances were started.
    pub started: AtomicUsize,
}

impl FakeDriver {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            started: AtomicUsize::new(0),
        }
    }
}

struct FakeInstance {
    id: String,
    io: std::sync::Mutex<Option<InstanceIo>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    task: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl Instance for FakeInstance {
    fn id(&self) -> &str {
        &self.id
    }
    fn take_io(&mut self) -> Option<InstanceIo> {
        self.io.get_mut().ok()?.take()
    }
    async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        let r = rx.wait_for(|e| e.is_some()).await;
        r.map(|e| e.unwrap_or_default()).unwrap_or_default()
    }
    async fn destroy(&self) {
        self.task.abort();
        let _ = self.wait().await;
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn handles(&self, image: &str) -> bool {
        image.starts_with("fake:")
    }
    async fn check_image(&self, _image: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn start(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, DriverError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (log_w, log_r) = tokio::io::duplex(64 * 1024);
        let dir = spec
            .iofs_dir
            .clone()
            .expect("http-stream instances get an iofs dir");
        let mode = self.mode;
        let task = tokio::spawn(async move {
            struct Exit(watch::Sender<Option<ExitInfo>>);
            impl Drop for Exit {
                fn drop(&mut self) {
                    let _ = self.0.send(Some(ExitInfo {
                        code: 137,
                        oom_killed: false,
                    }));
                }
            }
            let _exit = Exit(exit_tx);
            match mode {
                Mode::Crash => {}
                Mode::Silent => std::future::pending::<()>().await,
                Mode::Serve => {
                    let log = Arc::new(tokio::sync::Mutex::new(log_w));
                    let _ = fnrs_fdk::serve(
                        &dir.join("lsnr.sock"),
                        move |ctx: fnrs_fdk::Context, body| {
                            let log = log.clone();
                            async move {
                                let input = fnrs_fdk::read_body(body).await?;
                                let text = String::from_utf8_lossy(&input).to_string();
                                log.lock()
                                    .await
                                    .write_all(format!("got {text}\n").as_bytes())
                                    .await?;
                                if let Some(ms) = text.strip_prefix("sleep ") {
                                    let ms: u64 = ms.trim().parse().unwrap_or(0);
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                }
                                Ok(fnrs_fdk::Response::text(format!(
                                    "{} {}",
                                    ctx.call_id(),
                                    text
                                )))
                            }
                        },
                        std::future::pending(),
                    )
                    .await;
                }
            }
        });
        Ok(Box::new(FakeInstance {
            id: spec.id,
            io: std::sync::Mutex::new(Some(InstanceIo {
                stdin: None,
                stdout: Box::pin(tokio::io::empty()),
                stderr: Box::pin(log_r),
            })),
            exit: exit_rx,
            task,
        }))
    }
    async fn cleanup_leftovers(&self) -> Result<(), DriverError> {
        Ok(())
    }
    async fn health(&self) -> serde_json::Value {
        serde_json::json!({"ok": true})
    }
}
