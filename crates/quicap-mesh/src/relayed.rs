//! When to open an end-to-end relayed link: to a node the data path has packets for
//! but reaches only through other nodes (see `docs/routing.md`). No IO, no clock.
//!
//! ```text
//!  handle_wanted(node, now)  handle_dial_failed(node, now)  handle_link_up(node)
//!        |
//!        v
//!  poll_dial() -> node to dial at its virtual address
//! ```
//!
//! Packets keep coming while a dial runs, and each asks again: one dial per
//! [`RETRY_MS`] per node, longer than a dial may take, so that dials never overlap. A
//! dial that failed (routes still converging, say) lets the next ask through
//! [`REDIAL_MS`] later, while packets still come; with no packets, no dial.

use std::collections::{HashMap, VecDeque};

use crate::{NodeId, Time};

/// Least time between two relayed dials to one node.
pub const RETRY_MS: Time = 6_000;
/// After a relayed dial failed, the next may start this much later.
pub const REDIAL_MS: Time = 1_000;

/// The relayed dials of one node (see the module documentation).
#[derive(Debug, Default)]
pub struct RelayedDials {
    /// Per node, the earliest time of the next dial.
    next_at: HashMap<NodeId, Time>,
    queue: VecDeque<NodeId>,
}

impl RelayedDials {
    pub fn new() -> RelayedDials {
        RelayedDials::default()
    }

    /// The data path has a packet for `node`, which it reaches only through others and
    /// has no relayed link to. Returns whether this queued a dial.
    pub fn handle_wanted(&mut self, node: NodeId, now: Time) -> bool {
        if self.next_at.get(&node).is_some_and(|&t| now < t) {
            return false;
        }
        self.next_at.insert(node, now + RETRY_MS);
        self.queue.push_back(node);
        true
    }

    /// A relayed dial to `node` failed.
    pub fn handle_dial_failed(&mut self, node: NodeId, now: Time) {
        self.next_at.insert(node, now + REDIAL_MS);
    }

    /// A relayed link to `node` is up: a later need (once it is gone) dials at once.
    pub fn handle_link_up(&mut self, node: NodeId) {
        self.next_at.remove(&node);
    }

    /// Forgets what is long past, so that the map holds only nodes asked about lately.
    pub fn handle_timeout(&mut self, now: Time) {
        self.next_at.retain(|_, &mut t| t > now);
    }

    /// The next node to dial.
    pub fn poll_dial(&mut self) -> Option<NodeId> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: NodeId = NodeId(3);

    fn dials(d: &mut RelayedDials) -> Vec<NodeId> {
        std::iter::from_fn(|| d.poll_dial()).collect()
    }

    #[test]
    fn packets_during_a_dial_do_not_dial_again() {
        let mut d = RelayedDials::new();
        assert!(d.handle_wanted(C, 0));
        for t in (10..RETRY_MS).step_by(10) {
            assert!(!d.handle_wanted(C, t), "dialed again at {t}");
        }
        assert_eq!(dials(&mut d), [C]);
        // Still no link after RETRY_MS (the dial hung): the next packet tries again.
        assert!(d.handle_wanted(C, RETRY_MS));
        assert!(
            d.handle_wanted(NodeId(4), 100),
            "another node has its own pace"
        );
        assert_eq!(dials(&mut d), [C, NodeId(4)]);
    }

    #[test]
    fn a_failed_dial_is_retried_a_second_later_while_packets_come() {
        let mut d = RelayedDials::new();
        assert!(d.handle_wanted(C, 0));
        d.handle_dial_failed(C, 300);
        assert!(!d.handle_wanted(C, 300 + REDIAL_MS - 1));
        assert!(d.handle_wanted(C, 300 + REDIAL_MS));
        assert_eq!(dials(&mut d), [C, C]);
    }

    #[test]
    fn a_link_that_came_up_and_went_lets_the_next_packet_dial() {
        let mut d = RelayedDials::new();
        assert!(d.handle_wanted(C, 0));
        d.handle_link_up(C);
        assert!(d.handle_wanted(C, 100));
        d.handle_timeout(100 + RETRY_MS);
        assert!(d.next_at.is_empty());
    }
}
