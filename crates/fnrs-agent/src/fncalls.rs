//! `fn_calls_total{fn_id, outcome}`: counted by the agent itself rather than
//! in the metrics registry, which cannot forget a series, so that a deleted
//! fn's counts leave `/metrics` (see [`FnCalls::forget`]).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// The outcomes a call is counted under, as labelled.
const OUTCOMES: [&str; 5] = ["success", "timeout", "busy", "rejected", "error"];

/// One fn's counts, by outcome.
#[derive(Default)]
pub(crate) struct Counts([AtomicU64; OUTCOMES.len()]);

impl Counts {
    /// Count one call with `outcome` (one of [`OUTCOMES`]).
    pub(crate) fn add(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One fn's entry: its counts, and whether the store should be asked if the
/// fn still exists.
struct Entry {
    counts: Arc<Counts>,
    due: bool,
}

/// Every fn's counts.
#[derive(Default)]
pub(crate) struct FnCalls(Mutex<HashMap<String, Entry>>);

impl FnCalls {
    /// The counts of `fn_id` (made on first use).
    pub(crate) fn of(&self, fn_id: &str) -> Arc<Counts> {
        let mut map = self.0.lock();
        if let Some(e) = map.get(fn_id) {
            return Arc::clone(&e.counts);
        }
        let counts = Arc::new(Counts::default());
        let e = Entry {
            counts: Arc::clone(&counts),
            due: true,
        };
        map.insert(fn_id.to_string(), e);
        counts
    }

    /// Ask about `fn_id` at the next check (its pool went).
    pub(crate) fn mark_due(&self, fn_id: &str) {
        if let Some(e) = self.0.lock().get_mut(fn_id) {
            e.due = true;
        }
    }

    /// Ask about every fn at the next check.
    pub(crate) fn mark_all_due(&self) {
        for e in self.0.lock().values_mut() {
            e.due = true;
        }
    }

    /// The fns due for a check that `skip` leaves out (those with a pool,
    /// which stay due); they are no longer due.
    pub(crate) fn take_due(&self, skip: impl Fn(&str) -> bool) -> Vec<String> {
        let mut map = self.0.lock();
        let mut out = Vec::new();
        for (id, e) in map.iter_mut() {
            if e.due && !skip(id) {
                e.due = false;
                out.push(id.clone());
            }
        }
        out
    }

    /// Drop a deleted fn's series.
    pub(crate) fn forget(&self, fn_id: &str) {
        self.0.lock().remove(fn_id);
    }

    /// Prometheus text of the counts (outcomes never seen are left out).
    pub(crate) fn render(&self) -> String {
        let map = self.0.lock();
        let mut out = String::new();
        if map.is_empty() {
            return out;
        }
        out.push_str("# TYPE fn_calls_total counter\n");
        let mut ids: Vec<&String> = map.keys().collect();
        ids.sort();
        for id in ids {
            for (o, n) in OUTCOMES.iter().zip(&map[id].counts.0) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "fn_calls_total{{fn_id=\"{id}\",outcome=\"{o}\"}} {n}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_and_a_forgotten_fn_leaves() {
        let f = FnCalls::default();
        assert_eq!(f.render(), "");
        f.of("b").add("success");
        f.of("a").add("error");
        f.of("a").add("error");
        f.of("a").add("no such outcome");
        assert_eq!(
            f.render(),
            "# TYPE fn_calls_total counter\n\
             fn_calls_total{fn_id=\"a\",outcome=\"error\"} 2\n\
             fn_calls_total{fn_id=\"b\",outcome=\"success\"} 1\n"
        );
        f.forget("a");
        assert!(!f.render().contains("\"a\""));
        // Due once, until marked again.
        assert_eq!(f.take_due(|id| id == "x"), ["b"]);
        assert!(f.take_due(|_| false).is_empty());
        f.mark_due("b");
        assert_eq!(f.take_due(|_| false), ["b"]);
        f.mark_all_due();
        assert_eq!(f.take_due(|_| false), ["b"]);
    }
}
