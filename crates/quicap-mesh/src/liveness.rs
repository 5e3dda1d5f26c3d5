//! When a link counts as answering, how often it is probed, and when it is dead: the
//! rules every link follows, whoever dialed it. No IO, no clock; the daemon keeps the
//! counters (read on every packet, so in atomics) and asks these functions.
//!
//! A link's [`Pace`] follows what it carries. A link carrying tunnel traffic is probed
//! every [`PROBE_INTERVAL_MS`]; one that has carried none for a few seconds every
//! [`IDLE_PROBE_INTERVAL_MS`]; one idle for [`DORMANT_AFTER_MS`] more every
//! [`DORMANT_PROBE_INTERVAL_MS`], so that an idle node wakes a few times a second at
//! most. A link counts as answering while its silence stays within its probe interval
//! plus [`SILENT_BUSY_MS`] (a busy link: [`SILENT_BUSY_MS`] alone), and is dead after
//! the configured limit (a dormant one: the limit plus the longer interval). A link
//! that has just become busy is given the busy limits from that moment, not from its
//! last idle answer: dead-link detection of a link that starts carrying traffic again
//! takes no longer than that of one that was busy all along. For its transport choice
//! the link core ([`crate::links`]) also keeps a link that fell silent silent until it
//! answers again, so that becoming idle (and getting the longer limit) does not revive
//! it.

use crate::Time;

/// Probe interval of a link that carries tunnel traffic.
pub const PROBE_INTERVAL_MS: Time = 250;
/// Probe interval of a link that carries none. Probes are ack-eliciting, so they also
/// stand in for QUIC keepalives.
pub const IDLE_PROBE_INTERVAL_MS: Time = 1_000;
/// How long a link stays idle before it is probed at the dormant rate.
pub const DORMANT_AFTER_MS: Time = 10_000;
/// Probe interval of a dormant link: often enough to keep NAT mappings open.
pub const DORMANT_PROBE_INTERVAL_MS: Time = 5_000;
/// Silence after which a link carrying traffic no longer counts as answering: a
/// little over two probe intervals.
pub const SILENT_BUSY_MS: Time = 600;
/// The same for an idle link: one idle probe interval more.
pub const SILENT_IDLE_MS: Time = IDLE_PROBE_INTERVAL_MS + SILENT_BUSY_MS;
/// The same for a dormant link.
pub const SILENT_DORMANT_MS: Time = DORMANT_PROBE_INTERVAL_MS + SILENT_BUSY_MS;

/// How often a link is probed, by what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Carries tunnel traffic, since `since`.
    Busy { since: Time },
    /// Has carried none for a few seconds.
    Idle,
    /// Has carried none for [`DORMANT_AFTER_MS`] more.
    Dormant,
}

impl Pace {
    /// The probe interval when probes are answered on time.
    pub fn interval(self) -> Time {
        match self {
            Pace::Busy { .. } => PROBE_INTERVAL_MS,
            Pace::Idle => IDLE_PROBE_INTERVAL_MS,
            Pace::Dormant => DORMANT_PROBE_INTERVAL_MS,
        }
    }

    pub fn is_busy(self) -> bool {
        matches!(self, Pace::Busy { .. })
    }

    /// When the link's silence starts to count: its last answer, or for a link that
    /// went busy since, that moment.
    fn counted_from(self, last_answer: Time) -> Time {
        match self {
            Pace::Busy { since } => last_answer.max(since),
            Pace::Idle | Pace::Dormant => last_answer,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pace::Busy { .. } => "busy",
            Pace::Idle => "idle",
            Pace::Dormant => "dormant",
        }
    }
}

/// A link's pace as its traffic comes and goes: busy while it carries traffic, idle
/// once it stops, dormant after [`DORMANT_AFTER_MS`] more. Its prober keeps one.
#[derive(Debug, Clone, Copy)]
pub struct PaceClock {
    pace: Pace,
    /// When it last stopped carrying traffic.
    idle_since: Time,
}

impl PaceClock {
    /// A link at `pace` from `now`.
    pub fn new(pace: Pace, now: Time) -> PaceClock {
        PaceClock {
            pace,
            idle_since: now,
        }
    }

    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Whether the link carries traffic at `now`: the new pace, if that changes it.
    pub fn update(&mut self, busy: bool, now: Time) -> Option<Pace> {
        let next = match (busy, self.pace) {
            (true, Pace::Busy { .. }) => self.pace,
            (true, _) => Pace::Busy { since: now },
            (false, Pace::Busy { .. }) => {
                self.idle_since = now;
                Pace::Idle
            }
            (false, _) if now.saturating_sub(self.idle_since) >= DORMANT_AFTER_MS => Pace::Dormant,
            (false, _) => Pace::Idle,
        };
        (next != self.pace).then(|| {
            self.pace = next;
            next
        })
    }
}

/// The last moment a link at `pace` that last answered at `last_answer` still counts
/// as answering.
pub fn answering_until(last_answer: Time, pace: Pace) -> Time {
    let slack = match pace {
        Pace::Busy { .. } => 0,
        Pace::Idle | Pace::Dormant => pace.interval(),
    };
    pace.counted_from(last_answer) + slack + SILENT_BUSY_MS
}

/// Whether such a link counts as answering at `now` (see [`answering_until`]).
pub fn answering(last_answer: Time, pace: Pace, now: Time) -> bool {
    now <= answering_until(last_answer, pace)
}

/// The wait before the next probe of a link at `pace` silent for `silent` ms: its
/// interval while it answers on time, [`PROBE_INTERVAL_MS`] otherwise. A link whose
/// answer is late is probed at the full rate again, so that a few lost packets on a
/// lossy path do not add up to the silence that makes it dead.
pub fn probe_pause(pace: Pace, silent: Time) -> Time {
    let interval = pace.interval();
    if silent < interval + PROBE_INTERVAL_MS {
        interval
    } else {
        PROBE_INTERVAL_MS
    }
}

/// Whether a link at `pace` that last answered at `last_answer` is dead at `now` and
/// should be closed, given the configured limit (`transport.idle-timeout-ms`): QUIC's
/// own idle timeout misses a path that still delivers the peer's packets but loses
/// this node's, and TCP has none. A dormant link, whose answers are due less often,
/// has the limit beyond the longer wait for one; a busy one counts from when it went
/// busy if it answered last before.
pub fn dead(last_answer: Time, pace: Pace, limit: Time, now: Time) -> bool {
    let extra = match pace {
        Pace::Dormant => DORMANT_PROBE_INTERVAL_MS - IDLE_PROBE_INTERVAL_MS,
        Pace::Busy { .. } | Pace::Idle => 0,
    };
    now > pace
        .counted_from(last_answer)
        .saturating_add(limit.saturating_add(extra))
}

/// The longest a live link may go without a packet from its peer: a dormant link's
/// probe interval and the configured dead limit. QUIC's idle timeout must be longer.
pub fn longest_quiet(limit: Time) -> Time {
    DORMANT_PROBE_INTERVAL_MS.saturating_add(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Pace = Pace::Busy { since: 0 };

    #[test]
    fn a_busy_link_has_600_ms_an_idle_one_1600_a_dormant_one_5600() {
        assert!(answering(0, BUSY, SILENT_BUSY_MS));
        assert!(!answering(0, BUSY, SILENT_BUSY_MS + 1));
        assert!(answering(0, Pace::Idle, SILENT_IDLE_MS));
        assert!(!answering(0, Pace::Idle, SILENT_IDLE_MS + 1));
        assert!(answering(0, Pace::Dormant, SILENT_DORMANT_MS));
        assert!(!answering(0, Pace::Dormant, SILENT_DORMANT_MS + 1));
    }

    #[test]
    fn a_link_that_just_went_busy_is_timed_from_then() {
        // Last idle answer at 0, busy from 1000: answering until 1600.
        let pace = Pace::Busy { since: 1_000 };
        assert!(answering(0, pace, 1_000 + SILENT_BUSY_MS));
        assert!(!answering(0, pace, 1_001 + SILENT_BUSY_MS));
        // Dormant, last answer 5 s before traffic: dead 3 s after the traffic, as a
        // link busy all along would be 3 s after its last answer.
        let pace = Pace::Busy { since: 5_000 };
        assert!(!dead(0, pace, 3_000, 8_000));
        assert!(dead(0, pace, 3_000, 8_001));
        assert!(dead(6_000, BUSY, 3_000, 9_001));
    }

    #[test]
    fn idle_links_go_dormant_after_ten_seconds_and_busy_at_once() {
        let mut clock = PaceClock::new(Pace::Busy { since: 0 }, 0);
        assert_eq!(clock.update(true, 100), None);
        assert_eq!(clock.update(false, 1_000), Some(Pace::Idle));
        assert_eq!(clock.update(false, 1_000 + DORMANT_AFTER_MS - 1), None);
        assert_eq!(
            clock.update(false, 1_000 + DORMANT_AFTER_MS),
            Some(Pace::Dormant)
        );
        assert_eq!(clock.update(false, 60_000), None);
        assert_eq!(
            clock.update(true, 60_001),
            Some(Pace::Busy { since: 60_001 })
        );
        assert_eq!(clock.pace(), Pace::Busy { since: 60_001 });
        assert_eq!(clock.update(false, 65_000), Some(Pace::Idle));
        assert_eq!(clock.update(false, 70_000), None, "idle counted afresh");
    }

    #[test]
    fn links_answering_on_time_are_probed_at_their_pace() {
        assert_eq!(probe_pause(BUSY, 0), PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(BUSY, 1_300), PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(Pace::Idle, 0), IDLE_PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(Pace::Idle, 1_249), IDLE_PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(Pace::Idle, 1_250), PROBE_INTERVAL_MS, "late");
        assert_eq!(probe_pause(Pace::Dormant, 5_249), DORMANT_PROBE_INTERVAL_MS);
        assert_eq!(probe_pause(Pace::Dormant, 5_250), PROBE_INTERVAL_MS, "late");
    }

    #[test]
    fn dormant_links_have_the_limit_beyond_their_longer_interval() {
        assert!(!dead(0, Pace::Idle, 3_000, 3_000));
        assert!(dead(0, Pace::Idle, 3_000, 3_001));
        assert!(!dead(0, Pace::Dormant, 3_000, 7_000));
        assert!(dead(0, Pace::Dormant, 3_000, 7_001));
        // QUIC's idle timeout comes after a dormant link's probes find it dead.
        assert!(longest_quiet(3_000) > 7_000);
        // Any configured limit, however large, is taken as it is.
        assert!(!dead(10, Pace::Dormant, Time::MAX, Time::MAX - 1));
        assert_eq!(longest_quiet(Time::MAX), Time::MAX);
    }
}
