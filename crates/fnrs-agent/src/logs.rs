//! Log capture: every line an instance writes to stderr (and to stdout for
//! http-stream, where stdout carries no protocol) is kept in the current
//! call's log, up to `FN_MAX_LOG_SIZE_BYTES`, and echoed to the server log at
//! debug level (contract §5.4).

use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

use crate::recorder::Recorder;

/// How long a call's log stays open after the call, for output that trails
/// the answer (unless the next call begins first).
const TRAILING_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest line kept whole; longer lines are cut into pieces of this size.
const MAX_LINE: usize = 16 * 1024;

type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// Messages from the agent to an instance's log task (rare: the per-call
/// begin and end go through [`Shared`] without waking the task).
#[derive(Debug)]
enum LogCtl {
    /// A line from fnrs itself for the current call's log, after what the
    /// instance has already written.
    Note(String),
    /// A call ended and no close is scheduled: close its log after the grace
    /// period unless the next call begins first.
    Arm,
}

/// Identifies the lines of one instance.
#[derive(Debug, Clone)]
pub(crate) struct LogTags {
    pub app_id: String,
    pub fn_id: String,
    pub instance_id: String,
}

/// The log state of one instance, shared by the agent (which begins and ends
/// calls) and the instance's log task (which appends lines).
#[derive(Debug)]
struct Shared {
    state: parking_lot::Mutex<State>,
    tags: LogTags,
    recorder: Arc<Recorder>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Current>,
    /// When the ended current call's log is to be closed.
    ending: Option<Instant>,
    /// The task has (or has been asked to set) a timer for `ending`.
    timer: bool,
}

impl Shared {
    /// Hand a finished call's log to the recorder.
    fn finish(&self, mut cur: Current) {
        if cur.truncated {
            cur.buf
                .extend_from_slice(b"[fnrs: log truncated at FN_MAX_LOG_SIZE_BYTES]\n");
        }
        // A call that wrote nothing has no log to store (it reads as empty);
        // an instance that served no call has nobody to store it for.
        if cur.buf.is_empty() || cur.call_id.is_empty() {
            return;
        }
        self.recorder
            .log(cur.call_id, self.tags.fn_id.clone(), cur.buf);
    }
}

/// Where the agent begins and ends the calls of an instance.
#[derive(Debug, Clone)]
pub(crate) struct LogHandle {
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<LogCtl>,
}

impl LogHandle {
    /// A call starts on this instance: lines go to its log from now on (and
    /// the previous call's log, if still open, is closed).
    pub(crate) fn begin(&self, call_id: &str) {
        let old = {
            let mut st = self.shared.state.lock();
            // Already this call's (the instance started for it): go on.
            if st.current.as_ref().is_some_and(|c| c.call_id == call_id) {
                return;
            }
            // The first call: what the instance wrote while starting is its.
            if let Some(cur) = st.current.as_mut().filter(|c| c.call_id.is_empty()) {
                cur.call_id = call_id.to_string();
                return;
            }
            st.ending = None;
            st.current.replace(Current::new(call_id.to_string()))
        };
        if let Some(old) = old {
            self.shared.finish(old);
        }
    }

    /// A line from fnrs itself for the current call's log.
    pub(crate) fn note(&self, line: String) {
        let _ = self.ctl.send(LogCtl::Note(line));
    }

    /// The call is over. What the instance writes until the next call begins
    /// (at most [`TRAILING_GRACE`] later) still belongs to it: a container's
    /// output arrives through the engine after the answer.
    pub(crate) fn end(&self) {
        let arm = {
            let mut st = self.shared.state.lock();
            if st.current.is_none() {
                return;
            }
            st.ending = Some(Instant::now() + TRAILING_GRACE);
            !std::mem::replace(&mut st.timer, true)
        };
        if arm {
            let _ = self.ctl.send(LogCtl::Arm);
        }
    }
}

/// Start capturing. The task ends when every stream has closed and every
/// handle is dropped; the current call's log is then closed.
///
/// `call_id`: the call that lines go to from the first byte (a cold call's);
/// `None`: the first call that begins gets the lines written before it.
pub(crate) fn spawn_capture(
    streams: Vec<Reader>,
    tags: LogTags,
    max_bytes: usize,
    echo: bool,
    recorder: Arc<Recorder>,
    call_id: Option<&str>,
) -> LogHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: parking_lot::Mutex::new(State {
            current: Some(Current::new(call_id.unwrap_or_default().to_string())),
            ending: None,
            timer: false,
        }),
        tags,
        recorder,
    });
    tokio::spawn(capture(streams, Arc::clone(&shared), max_bytes, echo, rx));
    LogHandle { shared, ctl: tx }
}

#[derive(Debug)]
struct Current {
    call_id: String,
    buf: Vec<u8>,
    truncated: bool,
}

impl Current {
    fn new(call_id: String) -> Self {
        Self {
            call_id,
            buf: Vec::new(),
            truncated: false,
        }
    }
}

async fn capture(
    streams: Vec<Reader>,
    shared: Arc<Shared>,
    max_bytes: usize,
    echo: bool,
    mut ctl: mpsc::UnboundedReceiver<LogCtl>,
) {
    let codec = || AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE);
    let mut lines =
        futures::stream::select_all(streams.into_iter().map(|s| FramedRead::new(s, codec())));
    let mut ctl_open = true;
    let mut streams_open = !lines.is_empty();
    // One timer, re-set only when it fires early: calls that follow each
    // other closely do not each set one.
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed = false;
    let tags = &shared.tags;
    let append = |line: &[u8]| {
        let mut st = shared.state.lock();
        on_line(line, tags, st.current.as_mut(), max_bytes, echo);
    };
    while ctl_open || streams_open {
        tokio::select! {
            biased;
            line = lines.next(), if streams_open => match line {
                Some(Ok(line)) => append(&line),
                // Over-long line: the codec skips it; note that something was lost.
                Some(Err(_)) => append(b"[fnrs: line too long, dropped]"),
                None => streams_open = false,
            },
            msg = ctl.recv(), if ctl_open => match msg {
                Some(LogCtl::Note(note)) => {
                    // After whatever the instance has already written.
                    while let Some(Some(Ok(l))) = futures::FutureExt::now_or_never(lines.next()) {
                        append(&l);
                    }
                    append(note.as_bytes());
                }
                Some(LogCtl::Arm) => {
                    let at = shared.state.lock().ending;
                    if let (false, Some(at)) = (armed, at) {
                        timer.as_mut().reset(at);
                        armed = true;
                    }
                }
                None => ctl_open = false,
            },
            () = &mut timer, if armed => {
                let done = {
                    let mut st = shared.state.lock();
                    match st.ending {
                        // A later call ended since: wait for its grace.
                        Some(at) if at > Instant::now() => {
                            timer.as_mut().reset(at);
                            None
                        }
                        Some(_) => {
                            st.ending = None;
                            st.timer = false;
                            armed = false;
                            st.current.take()
                        }
                        None => {
                            st.timer = false;
                            armed = false;
                            None
                        }
                    }
                };
                if let Some(done) = done {
                    shared.finish(done);
                }
            }
        }
    }
    let last = shared.state.lock().current.take();
    if let Some(done) = last {
        shared.finish(done);
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

#[cfg(test)]
mod tests {
    use fnrs_datastore::conformance::{app, call, func};
    use fnrs_datastore::{Datastore, MemoryStore};
    use tokio::io::AsyncWriteExt;

    use super::*;

    struct Rig {
        store: Arc<MemoryStore>,
        recorder: Arc<Recorder>,
        fn_: fnrs_model::Fn,
        out: Option<tokio::io::DuplexStream>,
        logs: Option<LogHandle>,
    }

    async fn rig(first_call: Option<&str>) -> Rig {
        let store = Arc::new(MemoryStore::new());
        let a = app("logs");
        store.insert_app(&a).await.unwrap();
        let f = func(&a.id, "f");
        store.insert_fn(&f).await.unwrap();
        let recorder = Recorder::start(store.clone(), 0);
        let (out, reader) = tokio::io::duplex(64 * 1024);
        let tags = LogTags {
            app_id: a.id.clone(),
            fn_id: f.id.clone(),
            instance_id: "i".into(),
        };
        let logs = spawn_capture(
            vec![Box::pin(reader)],
            tags,
            1 << 20,
            false,
            Arc::clone(&recorder),
            first_call,
        );
        Rig {
            store,
            recorder,
            fn_: f,
            out: Some(out),
            logs: Some(logs),
        }
    }

    impl Rig {
        fn logs(&self) -> &LogHandle {
            self.logs.as_ref().unwrap()
        }

        async fn write(&mut self, line: &str) {
            self.out
                .as_mut()
                .unwrap()
                .write_all(line.as_bytes())
                .await
                .unwrap();
        }

        async fn call(&self, id: &str) {
            self.store.put_calls(&[call(&self.fn_, id)]).await.unwrap();
        }

        /// Let the log task take what was written.
        async fn settle(&self) {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }

        async fn log(&self, id: &str) -> String {
            self.recorder.flush().await;
            String::from_utf8(self.store.get_log(id).await.unwrap_or_default()).unwrap()
        }
    }

    /// Lines go to the call that runs; what trails its end goes to it too,
    /// until the next call begins, which closes the first call's log.
    #[tokio::test(start_paused = true)]
    async fn lines_go_to_the_running_call_and_its_trailing_grace() {
        let mut r = rig(Some("c1")).await;
        r.call("c1").await;
        r.call("c2").await;
        r.write("starting\n").await;
        r.logs().begin("c1");
        r.write("one\r\n").await;
        r.settle().await;
        r.logs().end();
        r.write("trailing one\n").await;
        r.settle().await;
        // Still open: nothing stored yet.
        assert_eq!(r.log("c1").await, "");
        r.logs().begin("c2");
        assert_eq!(r.log("c1").await, "starting\none\ntrailing one\n");
        r.write("two\n").await;
        r.settle().await;
        r.logs().end();
        // No next call: the grace period closes the log.
        tokio::time::sleep(TRAILING_GRACE + std::time::Duration::from_millis(10)).await;
        r.settle().await;
        assert_eq!(r.log("c2").await, "two\n");
        // Lines between calls belong to no call.
        r.write("idle\n").await;
        r.settle().await;
        r.logs().begin("c3");
        r.call("c3").await;
        r.logs().end();
        drop(r.out.take());
        drop(r.logs.take());
        r.settle().await;
        assert_eq!(r.log("c3").await, "");
        assert_eq!(r.log("c2").await, "two\n");
    }

    /// Without a first call named, what an instance writes while it starts
    /// goes to the first call it serves.
    #[tokio::test(start_paused = true)]
    async fn lines_written_while_starting_go_to_the_first_call() {
        let mut r = rig(None).await;
        r.call("c1").await;
        r.write("booting\n").await;
        r.settle().await;
        r.logs().begin("c1");
        r.write("serving\n").await;
        r.settle().await;
        r.logs().begin("c2");
        assert_eq!(r.log("c1").await, "booting\nserving\n");
    }

    /// Calls that follow each other within the grace each get their own
    /// lines, and a grace that ran out for an earlier call does not close a
    /// later one's log early.
    #[tokio::test(start_paused = true)]
    async fn back_to_back_calls_keep_their_own_lines() {
        let mut r = rig(None).await;
        for i in 0..5 {
            let id = format!("c{i}");
            r.call(&id).await;
            r.logs().begin(&id);
            r.write(&format!("line {i}\n")).await;
            r.settle().await;
            r.logs().end();
            tokio::time::sleep(TRAILING_GRACE / 3).await;
            r.settle().await;
        }
        // The last call ended a third of the grace ago: still open.
        r.write("late\n").await;
        r.settle().await;
        assert_eq!(r.log("c4").await, "");
        tokio::time::sleep(TRAILING_GRACE).await;
        r.settle().await;
        for i in 0..4 {
            assert_eq!(r.log(&format!("c{i}")).await, format!("line {i}\n"));
        }
        assert_eq!(r.log("c4").await, "line 4\nlate\n");
    }

    /// A note from fnrs comes after what the instance already wrote; the log
    /// closes with the instance's streams when the handle is gone.
    #[tokio::test(start_paused = true)]
    async fn notes_follow_written_lines_and_the_log_closes_at_eof() {
        let mut r = rig(Some("c1")).await;
        r.call("c1").await;
        r.write("before\n").await;
        r.logs().note("[fnrs] out of memory".into());
        r.settle().await;
        drop(r.logs.take());
        r.write("after\n").await;
        drop(r.out.take());
        r.settle().await;
        assert_eq!(r.log("c1").await, "before\n[fnrs] out of memory\nafter\n");
    }
}
