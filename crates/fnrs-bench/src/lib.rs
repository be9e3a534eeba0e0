//! Pieces of the fnrs benchmark harness shared by its binaries: latency
//! summaries and readings of a process's CPU time and memory from `/proc`.
//!
//! The binaries are `fnrs-load` (a hyper HTTP/1.1 keep-alive load client for
//! TCP and unix sockets) and `bench-fn` (an http-stream function that streams
//! a requested number of bytes). `bench/run.sh` drives them.

use std::path::Path;

use serde::Serialize;

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone?).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("cannot parse {0}")]
    Parse(String),
}

/// Summary of a set of latencies, in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Mean.
    pub mean_us: f64,
    /// Smallest.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// The nearest-rank percentile `q` (0..=1) of sorted samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarise latencies given in nanoseconds (sorts them in place).
pub fn summarize(samples_ns: &mut [u64]) -> Summary {
    if samples_ns.is_empty() {
        return Summary::default();
    }
    samples_ns.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let sum: u128 = samples_ns.iter().map(|&v| u128::from(v)).sum();
    Summary {
        count: samples_ns.len(),
        mean_us: sum as f64 / samples_ns.len() as f64 / 1000.0,
        min_us: us(samples_ns[0]),
        p50_us: us(percentile(samples_ns, 0.50)),
        p90_us: us(percentile(samples_ns, 0.90)),
        p99_us: us(percentile(samples_ns, 0.99)),
        p999_us: us(percentile(samples_ns, 0.999)),
        max_us: us(samples_ns[samples_ns.len() - 1]),
    }
}

fn read(path: &Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// User plus system CPU time of a process (all its threads), in clock
/// ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/stat");
    let text = read(Path::new(&path))?;
    parse_stat_cpu_ticks(&text).ok_or(ProcError::Parse(path))
}

/// utime + stime from the text of a `/proc/<pid>/stat` file.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after the last ')'. utime and stime are fields 14, 15.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub const CLK_TCK: u64 = 100;

/// A field of `/proc/<pid>/status` given in kB (e.g. `VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> Result<u64, ProcError> {
    let path = format!("/proc/{pid}/status");
    let text = read(Path::new(&path))?;
    parse_status_kb(&text, field).ok_or(ProcError::Parse(path))
}

/// A `kB` field from the text of a `/proc/<pid>/status` file.
pub fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_ascii_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|x| x * 1000).collect();
        let s = summarize(&mut v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p90_us, 900.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(summarize(&mut []), Summary::default());
        assert_eq!(percentile(&[7], 0.999), 7);
    }

    #[test]
    fn stat_with_odd_command_name() {
        let text = "1234 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 1";
        assert_eq!(parse_stat_cpu_ticks(text), Some(333));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(status_kb(pid, "VmRSS").unwrap() > 0);
        cpu_ticks(pid).unwrap();
    }
}
