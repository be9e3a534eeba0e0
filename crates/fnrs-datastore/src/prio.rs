//! CPU priority of the SQLite record writer: its OS thread runs at nice 19
//! while the recorder keeps up (so that a batch of records never delays a
//! call sharing the core) and at the process's own priority while it is
//! behind (so that records never pile up under saturation).
//!
//! sqlx runs each SQLite connection on its own OS thread; its `Any` driver
//! gives no hook to learn which, so the writer's thread is the one
//! `sqlx-sqlite-worker` thread that appears while its pool connects (see
//! [`worker_threads`]). Raising a thread's priority back needs
//! `CAP_SYS_NICE` (or a high `RLIMIT_NICE`): without it, or when the thread
//! cannot be told apart, the writer keeps its normal priority.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// The niceness of the writer while it keeps up (the lowest priority).
pub(crate) const LOW: i32 = 19;

/// sqlx names its SQLite threads `sqlx-sqlite-worker-N`; Linux keeps the
/// first 15 bytes of a thread's name.
const WORKER_PREFIX: &str = "sqlx-sqlite-wor";

/// The thread ids of this process's sqlx SQLite worker threads.
pub(crate) fn worker_threads() -> HashSet<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return HashSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&tid| is_worker(tid))
        .collect()
}

/// Whether thread `tid` of this process (still) is a sqlx SQLite worker.
fn is_worker(tid: i32) -> bool {
    std::fs::read(format!("/proc/self/task/{tid}/comm"))
        .is_ok_and(|comm| comm.starts_with(WORKER_PREFIX.as_bytes()))
}

/// The priority of the record writer's thread, changed only when the
/// recorder's state changes.
#[derive(Debug)]
pub(crate) struct WriterPriority {
    /// The writer thread and its normal niceness; `None`: feature off.
    thread: Option<(rustix::process::Pid, i32)>,
    /// Whether the thread is at [`LOW`] now.
    low: AtomicBool,
    /// Serializes changes (one syscall and the state together).
    change: Mutex<()>,
}

impl WriterPriority {
    /// Nothing to manage (PostgreSQL, or the writer thread is unknown).
    pub(crate) fn off() -> Self {
        Self {
            thread: None,
            low: AtomicBool::new(false),
            change: Mutex::new(()),
        }
    }

    /// Finds the writer's thread (the only worker thread not in `before`)
    /// and, if this process may raise its priority back, lowers it.
    pub(crate) fn find(before: &HashSet<i32>) -> Self {
        let new: Vec<i32> = worker_threads().difference(before).copied().collect();
        let [tid] = new[..] else {
            tracing::debug!(
                new_threads = new.len(),
                "record writer thread not identified: it keeps its priority"
            );
            return Self::off();
        };
        let Some(pid) = rustix::process::Pid::from_raw(tid) else {
            return Self::off();
        };
        let normal = match rustix::process::getpriority_process(Some(pid)) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(tid, error = %e, "record writer priority unknown: it keeps it");
                return Self::off();
            }
        };
        if normal >= LOW {
            return Self::off();
        }
        if !may_restore(normal) {
            tracing::debug!(
                tid,
                "no privilege to raise a thread's priority back: the record writer keeps its priority"
            );
            return Self::off();
        }
        let me = Self {
            thread: Some((pid, normal)),
            low: AtomicBool::new(false),
            change: Mutex::new(()),
        };
        // An idle server is not behind.
        me.set_behind(false);
        if me.low.load(Ordering::Relaxed) {
            tracing::debug!(
                tid,
                nice = LOW,
                "record writer runs at low priority while it keeps up"
            );
        }
        me
    }

    /// The writer's thread id while its priority is managed.
    pub(crate) fn tid(&self) -> Option<i32> {
        self.thread.map(|(pid, _)| pid.as_raw_nonzero().get())
    }

    /// The recorder is (not) behind: run the writer at its normal (low)
    /// priority. A system call only when the state changes.
    pub(crate) fn set_behind(&self, behind: bool) {
        let Some((pid, normal)) = self.thread else {
            return;
        };
        let low = !behind;
        if self.low.load(Ordering::Relaxed) == low {
            return;
        }
        let _g = self.change.lock();
        if self.low.load(Ordering::Relaxed) == low {
            return;
        }
        let tid = pid.as_raw_nonzero().get();
        // The thread may have ended (its connection closed) and its id gone
        // to another thread: never touch a thread that is not a worker.
        if !is_worker(tid) {
            tracing::debug!(tid, "record writer thread is gone");
            return;
        }
        let nice = if low { LOW } else { normal };
        match rustix::process::setpriority_process(Some(pid), nice) {
            Ok(()) => self.low.store(low, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(tid, nice, error = %e, "cannot set the record writer's priority")
            }
        }
    }
}

/// Whether this process may take a thread from nice 19 back to `normal`:
/// tried on a throwaway thread, so that a refusal leaves no thread stuck at
/// low priority.
fn may_restore(normal: i32) -> bool {
    let probe = std::thread::Builder::new()
        .name("fnrs-nice-probe".into())
        .spawn(move || {
            // `None`: the calling thread (Linux's niceness is per thread).
            rustix::process::setpriority_process(None, LOW).is_ok()
                && rustix::process::setpriority_process(None, normal).is_ok()
        });
    probe.is_ok_and(|t| t.join().unwrap_or(false))
}

/// Run `f` on the calling thread at nice 19, then give the thread its
/// niceness back: for work in the records' path that has a thread to itself
/// for the while (the agent turns each batch of records into statements on a
/// blocking-pool thread). Only when this process may restore the niceness
/// (probed once, as for the writer); otherwise `f` just runs. The thread must
/// not run anything else meanwhile: Linux's niceness is per thread.
pub fn at_low_priority<R>(f: impl FnOnce() -> R) -> R {
    static MAY: OnceLock<bool> = OnceLock::new();
    let normal = match rustix::process::getpriority_process(None) {
        Ok(n) if n < LOW => n,
        _ => return f(),
    };
    if !*MAY.get_or_init(|| may_restore(normal))
        || rustix::process::setpriority_process(None, LOW).is_err()
    {
        return f();
    }
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Err(e) = rustix::process::setpriority_process(None, self.0) {
                tracing::warn!(nice = self.0, error = %e, "cannot restore a thread's priority");
            }
        }
    }
    let _restore = Restore(normal);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on a thread of its own so that the test's thread is not touched.
    #[test]
    fn low_priority_holds_for_the_closure_only() {
        std::thread::spawn(|| {
            let before = rustix::process::getpriority_process(None).unwrap();
            let inside = at_low_priority(|| rustix::process::getpriority_process(None).unwrap());
            let after = rustix::process::getpriority_process(None).unwrap();
            assert_eq!(after, before);
            if may_restore(before) {
                assert_eq!(inside, LOW);
            } else {
                // No privilege to come back: the work runs as it was.
                assert_eq!(inside, before);
            }
        })
        .join()
        .unwrap();
    }
}
