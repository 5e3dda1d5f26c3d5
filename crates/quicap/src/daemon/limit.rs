//! Log lines about what others send, limited per source: the 1st, 2nd, 4th, 8th ...
//! event of each source is logged (with its count), so that a source repeating itself,
//! or a stranger trying again and again, costs the log a line per doubling instead of a
//! line per attempt.

use std::collections::HashMap;
use std::hash::Hash;
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
}
