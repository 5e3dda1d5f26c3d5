//! Route metrics and link costs.
//!
//! A metric is additive along a path, in units of 100 µs of round-trip time plus a
//! fixed per-hop cost; [`INFINITY`] means unreachable.

/// A route metric.
pub type Metric = u16;

/// The unreachable metric.
pub const INFINITY: Metric = u16::MAX;

/// Cost every hop adds regardless of its RTT, so that among equally fast paths the one
/// with fewer hops wins (10 = 1 ms of RTT).
pub const HOP_COST: u32 = 10;

/// The cost of a link with round-trip time `rtt_us` (microseconds) and packet loss
/// `loss_permille` (0-1000): the RTT in 100 µs units, plus [`HOP_COST`], scaled up by
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
    fn addition_saturates_and_infinity_absorbs() {
        assert_eq!(add(1, 2), 3);
        assert_eq!(add(INFINITY - 1, 5), INFINITY - 1);
        assert_eq!(add(INFINITY, 0), INFINITY);
        assert_eq!(add(3, INFINITY), INFINITY);
    }
}
