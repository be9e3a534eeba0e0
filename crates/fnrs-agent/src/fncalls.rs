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

/// Every fn's counts.
#[derive(Default)]
pub(crate) struct FnCalls(Mutex<HashMap<String, Arc<Counts>>>);

impl FnCalls {
    /// The counts of `fn_id` (made on first use).
    pub(crate) fn of(&self, fn_id: &str) -> Arc<Counts> {
        let mut map = self.0.lock();
        if let Some(c) = map.get(fn_id) {
            return Arc::clone(c);
        }
        let c = Arc::new(Counts::default());
        map.insert(fn_id.to_string(), Arc::clone(&c));
        c
    }

    /// The fns counted.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.0.lock().keys().cloned().collect()
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
            for (o, n) in OUTCOMES.iter().zip(&map[id].0) {
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
    }
}
