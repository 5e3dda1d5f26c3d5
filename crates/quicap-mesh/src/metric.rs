//! Route metrics and link costs.
//!
//! A metric is additive along a path, in units of 100 µs of round-trip time plus a
//! fixed per-hop cost; [`INFINITY`] means unreachable.

use std::collections::VecDeque;

use crate::Time;

/// A route metric.
pub type Metric = u16;

/// The unreachable metric.
pub const INFINITY: Metric = u16::MAX;

/// Cost every hop adds regardless of its RTT, so that among equally fast paths the one
/// with fewer hops wins (10 = 1 ms of RTT).
pub const HOP_COST: u32 = 10;

/// The cost of a link with round-trip time `rtt_us` (microseconds) and packet loss
/// `loss_permille` (0-1000): the RTT in 100 µs units, plus `HOP_COST`, scaled up by
/// loss as in Babel's ETX (a link losing half its packets costs twice as much). Never 0,
/// never [`INFINITY`].
pub fn link_cost(rtt_us: u64, loss_permille: u16) -> Metric {
    let base = u64::from(HOP_COST).saturating_add(rtt_us / 100);
    let delivered = 1000u64.saturating_sub(u64::from(loss_permille.min(999)));
    let cost = base.saturating_mul(1000) / delivered.max(1);
    Metric::try_from(cost.clamp(1, u64::from(INFINITY - 1))).unwrap_or(INFINITY - 1)
}

/// `a + b`, saturating at [`INFINITY`], with [`INFINITY`] absorbing.
pub fn add(a: Metric, b: Metric) -> Metric {
    if a == INFINITY || b == INFINITY {
        INFINITY
    } else {
        a.saturating_add(b).min(INFINITY - 1)
    }
}

/// The lowest of the values seen over a sliding time window: the RTT a link's cost is
/// computed from.
///
/// A smoothed RTT follows every late answer: on a loaded host one sample held up by
/// scheduling for 20 ms lifts a 0.5 ms estimate to 3 ms, which is enough to move a
/// route off a sub-millisecond link onto a detour and back a moment later. The path
/// itself did not change; its floor, the lowest estimate of the last few seconds, did
/// not either. A lower value takes effect at once; a higher one only once it has lasted
/// the whole window.
#[derive(Debug, Clone)]
pub struct WindowedMin {
    window: Time,
    /// Candidates in time order with strictly increasing values: the front is the
    /// minimum; an entry is dropped once a later one is as low or it ages out.
    samples: VecDeque<(Time, u64)>,
}

impl WindowedMin {
    /// A filter over the last `window` milliseconds.
    pub fn new(window: Time) -> WindowedMin {
        WindowedMin {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Records `value` at `now` (non-decreasing) and returns the minimum over the window.
    pub fn update(&mut self, now: Time, value: u64) -> u64 {
        while self.samples.back().is_some_and(|&(_, v)| v >= value) {
            self.samples.pop_back();
        }
        self.samples.push_back((now, value));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t.saturating_add(self.window) <= now)
        {
            self.samples.pop_front();
        }
        self.samples.front().map_or(value, |&(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_grows_with_rtt_and_loss() {
        assert_eq!(link_cost(0, 0), 10);
        assert_eq!(link_cost(1000, 0), 20);
        assert_eq!(link_cost(1000, 500), 40);
        assert!(link_cost(u64::MAX, 999) < INFINITY);
    }

    #[test]
    fn windowed_min_ignores_a_spike_and_follows_a_lasting_rise() {
        let mut f = WindowedMin::new(10_000);
        assert_eq!(f.update(0, 500), 500);
        // A spike (one late answer lifts the smoothed RTT for a while).
        assert_eq!(f.update(100, 3_000), 500);
        assert_eq!(f.update(2_000, 1_200), 500);
        // Lower: at once.
        assert_eq!(f.update(3_000, 400), 400);
        // Higher for good: only after the window.
        assert_eq!(f.update(5_000, 2_000), 400);
        assert_eq!(f.update(12_999, 2_000), 400);
        assert_eq!(f.update(13_000, 2_000), 2_000);
        assert_eq!(f.update(13_100, 2_100), 2_000);
        assert_eq!(f.update(23_100, 2_100), 2_100);
    }

    #[test]
    fn windowed_min_keeps_few_samples_when_values_rise() {
        let mut f = WindowedMin::new(1_000);
        for t in 0..10_000 {
            f.update(t, 10_000 - t);
        }
        assert_eq!(f.samples.len(), 1);
        for t in 10_000..20_000 {
            f.update(t, t);
        }
        assert!(f.samples.len() <= 1_000);
        assert_eq!(f.update(20_000, 1), 1);
        assert_eq!(f.samples.len(), 1);
    }

    #[test]
    fn addition_saturates_and_infinity_absorbs() {
        assert_eq!(add(1, 2), 3);
        assert_eq!(add(INFINITY - 1, 5), INFINITY - 1);
        assert_eq!(add(INFINITY, 0), INFINITY);
        assert_eq!(add(3, INFINITY), INFINITY);
    }
}
