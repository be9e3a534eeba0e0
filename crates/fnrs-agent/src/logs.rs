//! Log capture: every line an instance writes to stderr (and to stdout for
//! http-stream, where stdout carries no protocol) is kept in the current
//! call's log, up to `FN_MAX_LOG_SIZE_BYTES`, and echoed to the server log at
//! debug level (spec §3.7).

use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

use crate::recorder::Recorder;

/// How long a call's log stays open after the call, for output that trails
/// the answer (unless the next call begins first).
const TRAILING_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest line kept whole; longer lines are cut into pieces of this size.
const MAX_LINE: usize = 16 * 1024;

type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// Control messages from the agent to an instance's log task.
#[derive(Debug)]
pub(crate) enum LogCtl {
    /// A call starts on this instance: lines go to its log from now on.
    Begin(String),
    /// A line from fnrs itself for the current call's log.
    Note(String),
    /// The call is over: its log is handed to the recorder.
    End,
}

/// Identifies the lines of one instance.
#[derive(Debug, Clone)]
pub(crate) struct LogTags {
    pub app_id: String,
    pub fn_id: String,
    pub instance_id: String,
}

/// Where an instance's log task takes its orders.
#[derive(Debug, Clone)]
pub(crate) struct LogHandle {
    ctl: mpsc::UnboundedSender<LogCtl>,
}

impl LogHandle {
    pub(crate) fn begin(&self, call_id: &str) {
        let _ = self.ctl.send(LogCtl::Begin(call_id.to_string()));
    }

    pub(crate) fn note(&self, line: String) {
        let _ = self.ctl.send(LogCtl::Note(line));
    }

    pub(crate) fn end(&self) {
        let _ = self.ctl.send(LogCtl::End);
    }
}

/// Start capturing. The task ends when every stream has closed and the
/// handle is dropped.
///
/// `call_id`: the call that lines go to from the first byte (the one that
/// caused the instance to start), if any.
pub(crate) fn spawn_capture(
    streams: Vec<Reader>,
    tags: LogTags,
    max_bytes: usize,
    echo: bool,
    recorder: Arc<Recorder>,
    call_id: Option<&str>,
) -> LogHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let current = call_id.map(|id| Current {
        call_id: id.to_string(),
        buf: Vec::new(),
        truncated: false,
    });
    tokio::spawn(capture(
        streams, tags, max_bytes, echo, recorder, rx, current,
    ));
    LogHandle { ctl: tx }
}

struct Current {
    call_id: String,
    buf: Vec<u8>,
    truncated: bool,
}

async fn capture(
    streams: Vec<Reader>,
    tags: LogTags,
    max_bytes: usize,
    echo: bool,
    recorder: Arc<Recorder>,
    mut ctl: mpsc::UnboundedReceiver<LogCtl>,
    mut current: Option<Current>,
) {
    let codec = || AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE);
    let mut lines =
        futures::stream::select_all(streams.into_iter().map(|s| FramedRead::new(s, codec())));
    let mut ctl_open = true;
    let mut streams_open = !lines.is_empty();
    // When the current call's log is to be closed (after its end).
    let mut ending: Option<tokio::time::Instant> = None;
    while ctl_open || streams_open {
        tokio::select! {
            biased;
            line = lines.next(), if streams_open => match line {
                Some(Ok(line)) => on_line(&line, &tags, current.as_mut(), max_bytes, echo),
                // Over-long line: the codec skips it; note that something was lost.
                Some(Err(_)) => on_line(b"[fnrs: line too long, dropped]", &tags, current.as_mut(), max_bytes, echo),
                None => streams_open = false,
            },
            msg = ctl.recv(), if ctl_open => match msg {
                // Already this call's (the instance started for it): go on.
                Some(LogCtl::Begin(call_id)) if current.as_ref().is_some_and(|c| c.call_id == call_id) => {}
                Some(LogCtl::Begin(call_id)) => {
                    ending = None;
                    if let Some(done) = current.take() {
                        finish(done, &tags, &recorder);
                    }
                    current = Some(Current { call_id, buf: Vec::new(), truncated: false });
                }
                Some(LogCtl::Note(line)) => {
                    while let Some(Some(Ok(l))) = futures::FutureExt::now_or_never(lines.next()) {
                        on_line(&l, &tags, current.as_mut(), max_bytes, echo);
                    }
                    on_line(line.as_bytes(), &tags, current.as_mut(), max_bytes, echo);
                }
                Some(LogCtl::End) => {
                    // Whatever is already in the pipes belongs to the call, and so
                    // does what trails it a little (a container's output arrives
                    // through the engine after the answer): keep the log open for a
                    // grace period, or until the next call begins.
                    while let Some(Some(Ok(line))) = futures::FutureExt::now_or_never(lines.next()) {
                        on_line(&line, &tags, current.as_mut(), max_bytes, echo);
                    }
                    if current.is_some() {
                        ending = Some(tokio::time::Instant::now() + TRAILING_GRACE);
                    }
                }
                None => ctl_open = false,
            },
            _ = async {
                match ending {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                ending = None;
                if let Some(done) = current.take() {
                    finish(done, &tags, &recorder);
                }
            }
        }
    }
    if let Some(done) = current.take() {
        finish(done, &tags, &recorder);
    }
}

fn on_line(line: &[u8], tags: &LogTags, current: Option<&mut Current>, max: usize, echo: bool) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    match current {
        Some(cur) => {
            if echo {
                tracing::debug!(user_log = true, app_id = %tags.app_id, fn_id = %tags.fn_id, call_id = %cur.call_id, "{text}");
            }
            if cur.buf.len() + text.len() < max {
                cur.buf.extend_from_slice(text.as_bytes());
                cur.buf.push(b'\n');
            } else {
                cur.truncated = true;
            }
        }
        None => {
            if echo {
                tracing::debug!(user_log = true, app_id = %tags.app_id, fn_id = %tags.fn_id, instance_id = %tags.instance_id, "{text}");
            }
        }
    }
}

fn finish(mut cur: Current, tags: &LogTags, recorder: &Recorder) {
    if cur.truncated {
        cur.buf
            .extend_from_slice(b"[fnrs: log truncated at FN_MAX_LOG_SIZE_BYTES]\n");
    }
    // A call that wrote nothing has no log to store (it reads as empty).
    if cur.buf.is_empty() {
        return;
    }
    recorder.log(cur.call_id, tags.fn_id.clone(), cur.buf);
}
