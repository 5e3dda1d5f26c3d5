//! Log lines about what others send, limited per source: the 1st, 2nd, 4th, 8th ...
//! event of each source is logged (with its count), so that a source repeating itself,
//! or a stranger trying again and again, costs the log a line per doubling instead of a
//! line per attempt.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// Sources remembered at most; when a new one would exceed this, the counts start
/// over (each source then logs its next event again).
const MAX_SOURCES: usize = 4096;

/// Event counts per source.
#[derive(Debug)]
pub struct LogLimit<K> {
    counts: Mutex<HashMap<K, u64>>,
}

impl<K> Default for LogLimit<K> {
    fn default() -> Self {
        LogLimit {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> LogLimit<K> {
    /// Counts one event of `source`; returns its count when that is a power of two,
    /// i.e. when the event deserves a log line.
    pub fn hit(&self, source: K) -> Option<u64> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= MAX_SOURCES && !counts.contains_key(&source) {
            counts.clear();
        }
        let count = counts.entry(source).or_insert(0);
        *count += 1;
        count.is_power_of_two().then_some(*count)
    }
}

/// The source an address counts as: itself for IPv4, its /64 for IPv6 (one host or
/// network usually holds a whole /64).
pub fn address_source(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(a) => {
            let bits = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_powers_of_two_per_source() {
        let limit = LogLimit::default();
        let logged: Vec<u64> = (0..20).filter_map(|_| limit.hit("a")).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(limit.hit("b"), Some(1), "each source has its own count");
    }

    #[test]
    fn a_full_table_starts_over_instead_of_growing() {
        let limit = LogLimit::default();
        for i in 0..MAX_SOURCES {
            limit.hit(i);
        }
        limit.hit(0);
        assert_eq!(limit.hit(MAX_SOURCES), Some(1));
        assert_eq!(limit.counts.lock().unwrap().len(), 1);
        assert_eq!(limit.hit(0), Some(1));
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_source(a), address_source(b));
        assert_ne!(address_source(a), address_source(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_source(v4), v4);
    }
}
