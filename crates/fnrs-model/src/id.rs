use std::net::{IpAddr, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Makes ids in Fn's layout: 48 bits of Unix milliseconds, 48 bits of machine
/// id, 32 bits of counter, as 26 characters of Crockford base32. Ids sort by
/// creation time and never repeat within one generator.
#[derive(Debug)]
pub struct IdGenerator {
    machine: u64,
    counter: AtomicU32,
}

impl IdGenerator {
    /// A generator with an explicit 48-bit machine id.
    pub fn new(machine: u64) -> Self {
        Self {
            machine: machine & 0xFFFF_FFFF_FFFF,
            counter: AtomicU32::new(rand::random()),
        }
    }

    /// Machine id from the first non-loopback IPv4 address of this host and a
    /// port, as Fn derives it; random when no such address is found.
    pub fn for_port(port: u16) -> Self {
        let ip = local_ipv4().unwrap_or_else(rand::random);
        Self::new(((ip as u64) << 16) | port as u64)
    }

    pub fn next_id(&self) -> String {
        let ms = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let random = ((self.machine as u128) << 32) | count as u128;
        ulid::Ulid::from_parts(ms, random).to_string()
    }
}

fn local_ipv4() -> Option<u32> {
    // Connecting a UDP socket sends nothing; it only picks the route's source
    // address. A private-range destination keeps the choice on this host.
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.255.255.255:1").ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(u32::from(v4)),
        _ => None,
    }
}

/// A new id from a process-wide generator.
pub fn new_id() -> String {
    static GEN: OnceLock<IdGenerator> = OnceLock::new();
    GEN.get_or_init(|| IdGenerator::new(rand::random()))
        .next_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_26_crockford_chars_and_sorted() {
        let g = IdGenerator::new(0x1234_5678_9abc);
        let mut prev = String::new();
        for _ in 0..1000 {
            let id = g.next_id();
            assert_eq!(id.len(), 26);
            assert!(
                id.chars()
                    .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c))
            );
            assert_ne!(id, prev);
            prev = id;
        }
    }

    #[test]
    fn ids_sort_by_time() {
        let g = IdGenerator::new(1);
        let a = g.next_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = g.next_id();
        assert!(a < b);
    }
}
