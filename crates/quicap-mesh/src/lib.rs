//! QUICAP's mesh routing core: which neighbor to send a packet to so that it reaches a
//! node that is not directly connected, along the cheapest measured path.
//!
//! The algorithm is distance-vector with Babel's feasibility condition (RFC 8966 §3.5):
//! routes can only be selected when they cannot create a loop, at every instant, even
//! while updates are in flight; sequence numbers and requests for them let routes
//! recover after a failure. `docs/routing.md` describes it in full.
//!
//! The core does no IO and never reads a clock. The caller feeds it events and polls it
//! for messages and deadlines:
//!
//! ```text
//!  handle_link_up / handle_link_cost / handle_link_down   (from the transport)
//!  handle_message(from, message, now)                     (from neighbors)
//!  handle_timeout(now)                                    (when poll_timeout is due)
//!        |
//!        v
//!  poll_transmit() -> (neighbor, message)                 (send to the neighbor)
//!  poll_timeout()  -> next deadline
//!  next_hop(dest), routes()                               (forwarding, status)
//! ```
//!
//! [`links::PeerLinks`] decides about the links to one peer the same way: when to dial
//! it and over which transport (QUIC, or TLS/TCP while QUIC fails), which link carries
//! its traffic, and when a link is no longer needed.
//!
//! [`PrefixTable`] answers the other per-packet question: which node owns the longest
//! prefix containing a destination address.
//!
//! Time is a [`Time`] in milliseconds on any monotonic clock the caller chooses.

pub mod links;
pub mod liveness;
mod metric;
mod prefixes;
pub mod relayed;
mod router;

pub use metric::{link_cost, Metric, WindowedMin, INFINITY};
pub use prefixes::PrefixTable;
pub use router::{Config, Message, RouteInfo, RouteUpdate, Router};

/// A node identifier: the first 8 bytes of the SHA-256 of the node name; the one type
/// the wire formats, the routing core and the daemon share.
pub use quicap_wire::NodeId;

/// Milliseconds on the caller's monotonic clock.
pub type Time = u64;

/// Route sequence numbers, compared modulo 2^16 (RFC 8966 §3.2.1).
pub type Seqno = u16;

/// True if `a` is newer than `b` in modulo-2^16 arithmetic.
pub fn seqno_newer(a: Seqno, b: Seqno) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqno_comparison_wraps() {
        assert!(seqno_newer(1, 0));
        assert!(seqno_newer(0, 0xffff));
        assert!(!seqno_newer(0, 1));
        assert!(!seqno_newer(5, 5));
        assert!(seqno_newer(0x7fff, 0));
        assert!(!seqno_newer(0x8000, 0));
    }
}
