//! Memory capacity: every instance reserves its fn's memory for its whole
//! life, against a total detected from the machine (and its cgroup) or set by
//! `FN_MAX_TOTAL_MEMORY_BYTES` (contract §5.3).

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

const MIB: u64 = 1024 * 1024;

/// Memory accounting shared by all pools.
#[derive(Debug)]
pub(crate) struct Capacity {
    total: u64,
    used: Mutex<u64>,
    /// Woken whenever memory is released.
    pub(crate) released: Notify,
}

/// Memory held by one instance; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    capacity: Arc<Capacity>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut used = self.capacity.used.lock();
            *used = used.saturating_sub(self.bytes);
        }
        self.capacity.released.notify_waiters();
    }
}

impl Capacity {
    pub(crate) fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            used: Mutex::new(0),
            released: Notify::new(),
        })
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn used(&self) -> u64 {
        *self.used.lock()
    }

    /// Whether `memory_mb` could ever fit.
    pub(crate) fn can_ever_fit(&self, memory_mb: u64) -> bool {
        memory_mb.saturating_mul(MIB) <= self.total
    }

    /// Reserve `memory_mb` now, or say how many bytes are missing.
    pub(crate) fn try_reserve(self: &Arc<Self>, memory_mb: u64) -> Result<Reservation, u64> {
        let bytes = memory_mb.saturating_mul(MIB);
        let mut used = self.used.lock();
        let free = self.total.saturating_sub(*used);
        if bytes <= free {
            *used += bytes;
            Ok(Reservation {
                capacity: Arc::clone(self),
                bytes,
            })
        } else {
            Err(bytes - free)
        }
    }
}

/// Total memory for functions: min(MemAvailable, the cgroup's limit) less a
/// 10 % headroom clamped to [256 MiB, 5 GiB], then min with the configured cap.
pub(crate) fn detect_total_memory(configured: Option<u64>) -> u64 {
    let available = meminfo_available().unwrap_or(2 * 1024 * MIB);
    let limit = cgroup_memory_limit().map_or(available, |l| l.min(available));
    let headroom = (limit / 10).clamp(256 * MIB, 5 * 1024 * MIB);
    let detected = limit.saturating_sub(headroom);
    match configured {
        Some(c) if c > 0 => c.min(detected),
        _ => detected,
    }
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory limit of this process's own cgroup (v1 or v2), if any.
fn cgroup_memory_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let candidates: Vec<String> = if controllers.split(',').any(|c| c == "memory") {
            vec![
                format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string(),
            ]
        } else if controllers.is_empty() {
            vec![format!("/sys/fs/cgroup{path}/memory.max")]
        } else {
            continue;
        };
        for file in candidates {
            if let Ok(v) = std::fs::read_to_string(&file) {
                let v = v.trim();
                if v == "max" {
                    return None;
                }
                if let Ok(n) = v.parse::<u64>() {
                    // v1 reports "no limit" as a huge page-aligned number.
                    return (n < (1 << 60)).then_some(n);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_and_release() {
        let cap = Capacity::new(300 * MIB);
        let a = cap.try_reserve(128).unwrap();
        let b = cap.try_reserve(128).unwrap();
        assert_eq!(cap.try_reserve(128).unwrap_err(), 84 * MIB);
        drop(a);
        let _c = cap.try_reserve(128).unwrap();
        drop(b);
        assert_eq!(cap.used(), 128 * MIB);
        assert!(cap.can_ever_fit(300));
        assert!(!cap.can_ever_fit(301));
    }

    #[test]
    fn detects_something_sane() {
        let total = detect_total_memory(None);
        assert!(total > 0);
        assert_eq!(detect_total_memory(Some(512 * MIB)), 512 * MIB);
    }
}
