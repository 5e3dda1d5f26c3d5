//! When a link counts as answering, and how often it is probed: the rules every link
//! follows, whoever dialed it. No IO, no clock; the daemon keeps the counters (read on
//! every packet, so in atomics) and asks these functions.
//!
//! A link carrying tunnel traffic is probed every [`PROBE_INTERVAL_MS`] and counts as
//! answering while its silence stays within [`SILENT_BUSY_MS`]; an idle link is
//! probed every [`IDLE_PROBE_INTERVAL_MS`] and is given [`SILENT_IDLE_MS`]. A link that
//! has just become busy is given the busy limit from that moment, not from its last
//! idle answer. For its transport choice the link core ([`crate::links`]) also keeps
//! a link that fell silent silent until it answers again, so that becoming idle (and
//! getting the longer limit) does not revive it.

use crate::Time;

/// Probe interval of a link that carries tunnel traffic.
pub const PROBE_INTERVAL_MS: Time = 250;
/// Probe interval of a link that carries none. Probes are ack-eliciting, so they also
/// stand in for QUIC keepalives.
pub const IDLE_PROBE_INTERVAL_MS: Time = 1_000;
/// Silence after which a link carrying traffic no longer counts as answering: a
/// little over two probe intervals.
pub const SILENT_BUSY_MS: Time = 600;
/// The same for an idle link: one idle probe interval more.
pub const SILENT_IDLE_MS: Time = IDLE_PROBE_INTERVAL_MS + SILENT_BUSY_MS;

/// The last moment a link that last answered at `last_answer` still counts as
/// answering. `busy_since`: when it last went busy, if it carries traffic now.
pub fn answering_until(last_answer: Time, busy_since: Option<Time>) -> Time {
    match busy_since {
        Some(since) => last_answer.max(since) + SILENT_BUSY_MS,
        None => last_answer + SILENT_IDLE_MS,
    }
}

/// Whether such a link counts as answering at `now` (see [`answering_until`]).
pub fn answering(last_answer: Time, busy_since: Option<Time>, now: Time) -> bool {
    now <= answering_until(last_answer, busy_since)
}

/// The wait before the next probe of a link silent for `silent` ms:
/// [`IDLE_PROBE_INTERVAL_MS`] on an idle link that answered its last probe,
/// [`PROBE_INTERVAL_MS`] otherwise. An idle link whose answer is late is probed at the
/// full rate again, so that a few lost packets on a lossy path do not add up to the
/// silence that makes it dead.
pub fn probe_pause(idle: bool, silent: Time) -> Time {
    let answered = silent < IDLE_PROBE_INTERVAL_MS + PROBE_INTERVAL_MS;
    if idle && answered {
        IDLE_PROBE_INTERVAL_MS
    } else {
        PROBE_INTERVAL_MS
    }
}

/// Whether a link silent for `silent` ms is dead and should be closed, given the
/// configured limit (`transport.idle-timeout-ms`): QUIC's own idle timeout misses a
/// path that still delivers the peer's packets but loses this node's, and TCP has none.
pub fn dead(silent: Time, limit: Time) -> bool {
    silent > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_link_has_600_ms_an_idle_one_1600() {
        assert!(answering(0, Some(0), SILENT_BUSY_MS));
        assert!(!answering(0, Some(0), SILENT_BUSY_MS + 1));
        assert!(answering(0, None, SILENT_IDLE_MS));
        assert!(!answering(0, None, SILENT_IDLE_MS + 1));
    }

    #[test]
    fn a_link_that_just_went_busy_is_timed_from_then() {
        // Last idle answer at 0, busy from 1000: answering until 1600.
        assert!(answering(0, Some(1_000), 1_000 + SILENT_BUSY_MS));
        assert!(!answering(0, Some(1_000), 1_001 + SILENT_BUSY_MS));
    }

    #[test]
    fn idle_links_answering_on_time_are_probed_slowly() {
        assert_eq!(probe_pause(false, 0), PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(true, 0), IDLE_PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(true, 1_249), IDLE_PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(true, 1_250), PROBE_INTERVAL_MS, "answer late");
        assert_eq!(probe_pause(false, 1_300), PROBE_INTERVAL_MS);
        assert!(!dead(10_000, 10_000));
        assert!(dead(10_001, 10_000));
    }
}
