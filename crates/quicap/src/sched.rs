//! Scheduling of the thread that moves packets.
//!
//! Under load, a packet's latency through a userspace tunnel is mostly the time its
//! thread waits for a CPU behind busy programs (measured here: 2-3 ms behind an iperf3
//! on two cores with normal scheduling, about 0.5 ms with SCHED_RR). The kernel's own
//! network processing never waits like that. The lowest real-time priority is enough
//! to be picked first; the kernel's real-time throttling
//! (`kernel.sched_rt_runtime_us`, 95 % by default) still leaves other programs time on
//! that CPU if the node ever spins.
//!
//! Real-time priority has two costs, both measured here: when the CPU is saturated by
//! a flow that does not slow down (a UDP flood), the node takes the CPU from the
//! programs at either end and the receiving one loses far more than the tunnel would;
//! and on an idle machine a real-time wake-up lands on an idle CPU more often, which
//! costs a few tens of microseconds per hop. [`Governor`] therefore gives the thread
//! real-time priority only while it is busy *and* kept waiting for a CPU, and takes it
//! back as soon as the kernel drops packets nearby (the kernel's NAPI makes the same
//! call when it hands a packet flood from softirq to the normal-priority ksoftirqd).
//!
//! The system calls have no safe wrapper in the crates used here; they, the TCP link's
//! TCP_INFO read (`link::tcp`) and [`crate::heap`] are the only `unsafe` in the
//! workspace.
#![allow(unsafe_code)]

use std::io;
use std::time::{Duration, Instant};

/// Lowest SCHED_RR priority.
const PRIORITY: libc::c_int = 1;

/// Gives the calling thread SCHED_RR at the lowest priority. Threads it creates later
/// start with normal scheduling (SCHED_RESET_ON_FORK).
pub fn realtime() -> io::Result<()> {
    set(libc::SCHED_RR, PRIORITY)
}

/// Gives the calling thread normal scheduling (SCHED_OTHER) back.
pub fn normal() -> io::Result<()> {
    set(libc::SCHED_OTHER, 0)
}

fn set(policy: libc::c_int, priority: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread and `param` is a valid sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, policy | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the calling thread runs with a real-time policy.
pub fn is_realtime() -> bool {
    // SAFETY: pid 0 is the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy >= 0 && (policy & !libc::SCHED_RESET_ON_FORK) == libc::SCHED_RR
}

/// How often the governor samples.
pub const TICK: Duration = Duration::from_millis(100);
/// How often it samples a quiet thread with normal scheduling: an idle node wakes
/// twice a second for it, not ten times, and takes at most this long to notice load.
pub const QUIET_TICK: Duration = Duration::from_millis(500);
/// Busy for at least this much of a tick (5 %) and kept waiting 1 ms: real-time
/// priority pays off. Light traffic does not qualify: with idle CPUs around, a
/// real-time wake-up costs more than it saves.
const PROMOTE_BUSY: Duration = Duration::from_millis(5);
const PROMOTE_WAITED: Duration = Duration::from_millis(1);
/// Busy for less than this per tick, for [`IDLE_TICKS`] ticks in a row: back to normal.
const IDLE_BUSY: Duration = Duration::from_micros(2500);
const IDLE_TICKS: u32 = 10;
/// Busy for less than this in one tick (1 % of a CPU; a ping every 50 ms is well
/// under it): the load is over, back to normal at once. Real-time wake-ups of light
/// traffic land on idle CPUs and slow it down: pings right after a TCP transfer took
/// 0.35-0.40 ms for the second the thread stayed real-time, 0.28 ms after.
const QUIET_BUSY: Duration = Duration::from_millis(1);
/// After drops, normal scheduling until [`FIRST_HOLD`] has passed without drops. If
/// drops come back within [`CALM`] of taking real-time priority again (perhaps
/// because of it), the hold doubles, up to [`MAX_HOLD`].
const FIRST_HOLD: Duration = Duration::from_secs(1);
const MAX_HOLD: Duration = Duration::from_secs(60);
const CALM: Duration = Duration::from_secs(5);

/// What the governor sees of one tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU time the thread used.
    pub busy: Duration,
    /// Time the thread was runnable but waited on a run queue.
    pub waited: Duration,
    /// Packets the kernel dropped nearby: our interfaces' transmit queues (the node
    /// reads too slowly) and the UDP receive buffers of other programs in this network
    /// namespace (they receive too slowly).
    pub drops: u64,
}

/// A change of scheduling the governor asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Busy and kept waiting for a CPU: take real-time priority.
    Promote,
    /// The kernel dropped packets: give real-time priority back.
    DemoteDrops,
    /// Idle: give real-time priority back.
    DemoteIdle,
}

/// Decides, tick by tick, whether the packet thread should run with real-time
/// priority (`node.realtime = "auto"`). Pure logic; the daemon feeds it samples and
/// applies its changes.
#[derive(Debug)]
pub struct Governor {
    realtime: bool,
    idle_ticks: u32,
    hold_until: Option<Instant>,
    hold: Duration,
    promoted_at: Option<Instant>,
}

impl Default for Governor {
    fn default() -> Self {
        Self::new()
    }
}

impl Governor {
    /// Starts with normal scheduling.
    pub fn new() -> Self {
        Self {
            realtime: false,
            idle_ticks: 0,
            hold_until: None,
            hold: FIRST_HOLD,
            promoted_at: None,
        }
    }

    pub fn is_realtime(&self) -> bool {
        self.realtime
    }

    /// How long to wait for the next sample after one of `busy` CPU time over `period`:
    /// [`QUIET_TICK`] while normal and busy for less than `IDLE_BUSY` (2.5 ms) per [`TICK`],
    /// [`TICK`] otherwise. Only samples over [`TICK`] go to [`Governor::tick`].
    pub fn next_tick(&self, busy: Duration, period: Duration) -> Duration {
        let quiet = busy.as_nanos() * TICK.as_nanos() < IDLE_BUSY.as_nanos() * period.as_nanos();
        if !self.realtime && quiet {
            QUIET_TICK
        } else {
            TICK
        }
    }

    /// Whether the next tick's decision needs the drop counters (reading them costs
    /// more than the rest of a tick): only when real-time or busy enough to promote.
    pub fn wants_drops(&self, busy: Duration) -> bool {
        self.realtime || busy >= PROMOTE_BUSY
    }

    /// Takes one tick's sample; returns the change to make, if any. `s.drops` must
    /// cover the whole tick whenever [`Governor::wants_drops`] says so.
    pub fn tick(&mut self, now: Instant, s: Sample) -> Option<Change> {
        if s.drops > 0 {
            self.idle_ticks = 0;
            if self.realtime {
                self.realtime = false;
                let soon = self.promoted_at.is_some_and(|t| now - t < CALM);
                self.hold = if soon {
                    (self.hold * 2).min(MAX_HOLD)
                } else {
                    FIRST_HOLD
                };
                self.hold_until = Some(now + self.hold);
                return Some(Change::DemoteDrops);
            }
            self.hold_until = Some(now + self.hold);
            return None;
        }
        if self.realtime {
            if s.busy < QUIET_BUSY {
                self.realtime = false;
                self.idle_ticks = 0;
                return Some(Change::DemoteIdle);
            }
            if s.busy < IDLE_BUSY {
                self.idle_ticks += 1;
                if self.idle_ticks >= IDLE_TICKS {
                    self.realtime = false;
                    self.idle_ticks = 0;
                    return Some(Change::DemoteIdle);
                }
            } else {
                self.idle_ticks = 0;
            }
            return None;
        }
        let held = self.hold_until.is_some_and(|t| now < t);
        if !held && s.busy >= PROMOTE_BUSY && s.waited >= PROMOTE_WAITED {
            self.realtime = true;
            self.idle_ticks = 0;
            self.promoted_at = Some(now);
            return Some(Change::Promote);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOADED: Sample = Sample {
        busy: Duration::from_millis(70),
        waited: Duration::from_millis(20),
        drops: 0,
    };
    const IDLE: Sample = Sample {
        busy: Duration::from_micros(100),
        waited: Duration::from_micros(10),
        drops: 0,
    };
    /// Light traffic: under the idle bound, over the quiet one.
    const LIGHT: Sample = Sample {
        busy: Duration::from_millis(2),
        waited: Duration::from_micros(100),
        drops: 0,
    };
    const FLOOD: Sample = Sample {
        busy: Duration::from_millis(60),
        waited: Duration::from_millis(30),
        drops: 500,
    };

    /// Feeds `n` ticks of `s` starting at `*t`; returns the changes made.
    fn run(g: &mut Governor, t: &mut Instant, s: Sample, n: u32) -> Vec<Change> {
        let mut changes = Vec::new();
        for _ in 0..n {
            *t += TICK;
            changes.extend(g.tick(*t, s));
        }
        changes
    }

    #[test]
    fn quiet_normal_threads_are_sampled_less_often() {
        let g = Governor::new();
        let ms = Duration::from_millis;
        assert_eq!(g.next_tick(ms(1), TICK), QUIET_TICK);
        assert_eq!(g.next_tick(ms(10), QUIET_TICK), QUIET_TICK, "2 % of a CPU");
        assert_eq!(g.next_tick(ms(15), QUIET_TICK), TICK, "3 % of a CPU");
        assert_eq!(g.next_tick(ms(5), TICK), TICK);
        let mut g = Governor::new();
        let mut t = Instant::now();
        run(&mut g, &mut t, LOADED, 1);
        assert!(g.is_realtime());
        assert_eq!(g.next_tick(Duration::ZERO, TICK), TICK, "real-time");
    }

    #[test]
    fn idle_stays_normal() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        assert!(run(&mut g, &mut t, IDLE, 100).is_empty());
        // Waiting behind others but hardly busy (a ping every 20 ms on a loaded
        // machine).
        let waiting = Sample {
            busy: Duration::from_millis(3),
            waited: Duration::from_millis(5),
            drops: 0,
        };
        assert!(run(&mut g, &mut t, waiting, 100).is_empty());
        assert!(!g.is_realtime());
    }

    #[test]
    fn busy_and_waiting_promotes_then_light_traffic_demotes_after_a_second() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        assert_eq!(run(&mut g, &mut t, LOADED, 1), [Change::Promote]);
        // Real-time: no more waiting, still busy.
        let rt = Sample {
            waited: Duration::ZERO,
            ..LOADED
        };
        assert!(run(&mut g, &mut t, rt, 50).is_empty());
        assert!(g.is_realtime());
        assert!(run(&mut g, &mut t, LIGHT, IDLE_TICKS - 1).is_empty());
        assert_eq!(run(&mut g, &mut t, LIGHT, 1), [Change::DemoteIdle]);
        assert_eq!(run(&mut g, &mut t, LOADED, 1), [Change::Promote]);
        // A busy tick in between starts the count again.
        assert!(run(&mut g, &mut t, LIGHT, IDLE_TICKS - 1).is_empty());
        assert!(run(&mut g, &mut t, rt, 1).is_empty());
        assert!(run(&mut g, &mut t, LIGHT, IDLE_TICKS - 1).is_empty());
        assert!(g.is_realtime());
    }

    #[test]
    fn a_quiet_tick_demotes_at_once() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        assert_eq!(run(&mut g, &mut t, LOADED, 1), [Change::Promote]);
        assert!(run(&mut g, &mut t, LIGHT, 3).is_empty());
        assert_eq!(run(&mut g, &mut t, IDLE, 1), [Change::DemoteIdle]);
        assert!(!g.is_realtime());
        assert!(run(&mut g, &mut t, IDLE, 20).is_empty());
    }

    #[test]
    fn drops_demote_and_hold_normal_scheduling_while_they_last() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        assert_eq!(run(&mut g, &mut t, LOADED, 1), [Change::Promote]);
        assert_eq!(run(&mut g, &mut t, FLOOD, 1), [Change::DemoteDrops]);
        // A flood lasting a minute keeps it normal.
        assert!(run(&mut g, &mut t, FLOOD, 600).is_empty());
        // Once drops stop, it waits out the hold (doubled: 2 s) before promoting.
        let changes = run(&mut g, &mut t, LOADED, 19);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(run(&mut g, &mut t, LOADED, 1), [Change::Promote]);
    }

    #[test]
    fn drops_soon_after_promotion_back_off_up_to_a_minute() {
        let (mut g, mut t) = (Governor::new(), Instant::now());
        let mut holds = Vec::new();
        for _ in 0..9 {
            // Loaded until promoted, counting the ticks held back.
            let mut ticks = 0;
            while g.tick(t, LOADED) != Some(Change::Promote) {
                t += TICK;
                ticks += 1;
            }
            holds.push(ticks);
            t += TICK;
            assert_eq!(g.tick(t, FLOOD), Some(Change::DemoteDrops));
        }
        // Drops right after each promotion: held 2 s, then 4, 8, ... capped at 60 s.
        assert_eq!(holds[1..], [20, 40, 80, 160, 320, 600, 600, 600]);
        // Real-time for 5 s without drops: the next drops hold it back 1 s only.
        let _ = run(&mut g, &mut t, LOADED, 600);
        assert!(g.is_realtime());
        let _ = run(&mut g, &mut t, LOADED, 50);
        assert_eq!(run(&mut g, &mut t, FLOOD, 1), [Change::DemoteDrops]);
        let changes = run(&mut g, &mut t, LOADED, 11);
        assert_eq!(changes, [Change::Promote]);
    }
}
