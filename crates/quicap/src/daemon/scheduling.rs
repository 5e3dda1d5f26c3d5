//! `node.realtime`: the packet thread's scheduling policy. "always" and "never" are
//! set once at start; "auto" runs [`crate::sched::Governor`] on the packet thread
//! itself (the runtime is single-threaded), fed from the kernel's counters and from
//! the drops other nodes on the same machine report ([`Message::HostDrops`]).
//!
//! Several nodes on one machine (a lab, the demo mesh, a benchmark) share its CPUs but
//! not its network namespaces: a sending node that keeps up with its own interface
//! sees no drops, while the receiving node's namespace overflows because the sender's
//! real-time thread takes the CPU from the programs there. So a node that counts
//! drops tells its peers, and a peer on the same machine counts them as its own.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quicap_wire::{Message, HOST_ID_LEN};
use tracing::{debug, info, warn};

use super::Node;
use crate::config::Realtime;
use crate::sched::{self, Change, Governor, Sample};

/// The policy asked for and the one in force, for `quicap status`.
#[derive(Debug)]
pub struct Scheduling {
    mode: Realtime,
    realtime: AtomicBool,
    /// This machine, as [`Message::HostDrops`] names it; `None` if unknown.
    host: Option<[u8; HOST_ID_LEN]>,
    /// Drop reports from nodes on this machine since the governor last looked.
    reports_pending: AtomicU64,
    /// Drop reports from nodes on this machine, ever.
    reports: AtomicU64,
}

/// How often a node that keeps counting drops reports them: often enough that a peer's
/// one-second hold on real-time priority does not lapse while they last.
const REPORT_EVERY: Duration = Duration::from_millis(500);

impl Scheduling {
    /// Applies "always" to the calling thread (the packet thread); "auto" starts normal.
    pub fn start(mode: Realtime) -> Self {
        if mode == Realtime::Always {
            if let Err(e) = sched::realtime() {
                warn!(error = %e, "real-time scheduling unavailable (needs CAP_SYS_NICE); latency under load will be higher");
            }
        }
        Self {
            mode,
            realtime: AtomicBool::new(sched::is_realtime()),
            host: host_id(),
            reports_pending: AtomicU64::new(0),
            reports: AtomicU64::new(0),
        }
    }

    /// Takes a peer's [`Message::HostDrops`]: counted when it comes from this machine.
    pub fn host_drops(&self, host: &[u8; HOST_ID_LEN]) {
        if self.host.as_ref() == Some(host) {
            self.reports_pending.fetch_add(1, Ordering::Relaxed);
            self.reports.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `real-time (realtime = auto)`, `normal (realtime = never)`, ...
    pub fn describe(&self) -> String {
        let now = if self.realtime.load(Ordering::Relaxed) {
            "real-time"
        } else {
            "normal"
        };
        let mode = match self.mode {
            Realtime::Auto => "auto",
            Realtime::Always => "always",
            Realtime::Never => "never",
        };
        match self.reports.load(Ordering::Relaxed) {
            0 => format!("{now} (realtime = {mode})"),
            n => format!("{now} (realtime = {mode}; {n} drop reports from nodes on this machine)"),
        }
    }
}

/// Quiet samples in a row after which the governor samples every [`DORMANT_TICK`]
/// only (or when an idle link carries traffic again): about 2.5 s of idleness.
const DORMANT_AFTER: u32 = 5;
const DORMANT_TICK: Duration = Duration::from_secs(5);
/// CPU time of the packet thread per sample below which the node counts as idle (its
/// probes and timers take a few hundred microseconds a second).
const DORMANT_BUSY: Duration = Duration::from_millis(2);

/// This machine's id for [`Message::HostDrops`]: the first bytes of SHA-256 over a
/// label and the kernel's boot id, which every network namespace of one running kernel
/// shares. The boot id itself stays on the machine.
fn host_id() -> Option<[u8; HOST_ID_LEN]> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(host_id_from(boot.trim()))
}

fn host_id_from(boot_id: &str) -> [u8; HOST_ID_LEN] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"quicap host id");
    ctx.update(boot_id.as_bytes());
    let mut id = [0u8; HOST_ID_LEN];
    id.copy_from_slice(&ctx.finish().as_ref()[..HOST_ID_LEN]);
    id
}

/// In "auto" mode, samples every [`sched::TICK`] (every [`sched::QUIET_TICK`] while
/// the thread is quiet) and switches the calling thread's policy as the governor says.
/// Must run on the packet thread. Returns at once in the other modes, or if the
/// counters or the system call are unavailable.
pub async fn govern(node: Arc<Node>) {
    if node.scheduling.mode != Realtime::Auto {
        return;
    }
    let interfaces: Vec<String> = node.interfaces().map(|i| i.spec.name.clone()).collect();
    let Some(mut last) = thread_times() else {
        warn!(
            "/proc/thread-self/schedstat unreadable: realtime = \"auto\" keeps normal scheduling"
        );
        return;
    };
    // Drop counters as last read; `None` while the governor did not need them.
    let mut last_drops: Option<DropCounters> = None;
    let mut last_report: Option<Instant> = None;
    let mut governor = Governor::new();
    let mut period = sched::TICK;
    // Quiet samples in a row with next to no CPU: the node is idle.
    let mut dormant = 0u32;
    loop {
        let slept = Instant::now();
        let dormant_sample = dormant >= DORMANT_AFTER;
        if dormant_sample {
            // Idle: sampled rarely, and at once when an idle link carries traffic again.
            let traffic = tokio::select! {
                () = tokio::time::sleep(super::aligned_pause(DORMANT_TICK)) => false,
                () = node.traffic_resumed.notified() => true,
            };
            if traffic {
                dormant = 0;
            }
        } else {
            tokio::time::sleep(period).await;
        }
        let Some(now) = thread_times() else {
            continue;
        };
        let (busy, waited) = (now.0.saturating_sub(last.0), now.1.saturating_sub(last.1));
        last = now;
        let busy = Duration::from_nanos(busy);
        let reported = node.scheduling.reports_pending.swap(0, Ordering::Relaxed);
        // A sample over the time slept, rounded to the tick it was meant to be.
        let slept = slept.elapsed();
        let sampled = if slept >= sched::QUIET_TICK {
            sched::QUIET_TICK.max(period)
        } else {
            period
        };
        // A dormant sample counts at its rate over the tick. (Other long sleeps are a
        // thread that did not run, e.g. stopped: their time counts in full.)
        let busy = if dormant_sample && slept > sampled {
            busy.mul_f64(sampled.as_secs_f64() / slept.as_secs_f64())
        } else {
            busy
        };
        period = governor.next_tick(busy, sampled);
        let idle = period == sched::QUIET_TICK && busy < DORMANT_BUSY && reported == 0;
        dormant = if idle { dormant.saturating_add(1) } else { 0 };
        if sampled != sched::TICK || !governor.wants_drops(busy) {
            // A quiet sample only sets the pace; decisions take samples of one tick.
            last_drops = None;
            continue;
        }
        let drops_now = DropCounters::read(&node, &interfaces);
        let Some(drops_before) = last_drops.replace(drops_now) else {
            // No baseline yet: decide on the next tick, with drops over a whole tick.
            continue;
        };
        let here = drops_now.since(drops_before);
        let now = Instant::now();
        if here > 0 && last_report.is_none_or(|t| now - t >= REPORT_EVERY) {
            if let Some(host) = node.scheduling.host {
                last_report = Some(now);
                node.peers
                    .send_control_to_all(&Message::HostDrops(host), node.now_ms());
            }
        }
        let sample = Sample {
            busy,
            waited: Duration::from_nanos(waited),
            drops: here + reported,
        };
        let Some(change) = governor.tick(now, sample) else {
            continue;
        };
        let result = match change {
            Change::Promote => sched::realtime(),
            Change::DemoteDrops | Change::DemoteIdle => sched::normal(),
        };
        if let Err(e) = result {
            info!(error = %e, "real-time scheduling unavailable (needs CAP_SYS_NICE); realtime = \"auto\" stays with normal scheduling");
            let _ = sched::normal();
            node.scheduling.realtime.store(false, Ordering::Relaxed);
            return;
        }
        node.scheduling
            .realtime
            .store(sched::is_realtime(), Ordering::Relaxed);
        match change {
            Change::Promote => debug!("packet thread real-time: busy and waiting for a CPU"),
            Change::DemoteDrops => debug!(
                drops = here,
                reports = reported,
                "packet thread back to normal scheduling: the kernel dropped packets here or in another node on this machine"
            ),
            Change::DemoteIdle => debug!("packet thread back to normal scheduling: idle"),
        }
    }
}

/// The calling thread's nanoseconds on a CPU and waiting on a run queue, so far.
fn thread_times() -> Option<(u64, u64)> {
    parse_schedstat(&fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// Packets the kernel dropped so far that tell this node to give CPU back: at its
/// interfaces' transmit queues (the node reads too slowly while something else needs
/// the CPU) and at the UDP receive buffers of other programs in this network
/// namespace. Drops at the node's own sockets are left out: the node itself receives
/// too slowly, and giving up real-time priority would only make that worse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DropCounters {
    interfaces: u64,
    /// `RcvbufErrors` of every UDP socket in the namespace, IPv4 and IPv6.
    udp_rcvbuf: u64,
    /// Drops counted by the node's own sockets.
    own_sockets: u64,
}

impl DropCounters {
    fn read(node: &Node, interfaces: &[String]) -> DropCounters {
        let read = |path| fs::read_to_string(path).unwrap_or_default();
        DropCounters {
            interfaces: tx_drops(&read("/proc/net/dev"), interfaces),
            udp_rcvbuf: snmp_counter(&read("/proc/net/snmp"), "Udp:", "RcvbufErrors")
                + snmp6_counter(&read("/proc/net/snmp6"), "Udp6RcvbufErrors"),
            own_sockets: node.socket_drops.count(),
        }
    }

    /// The drops since `before` that count against real-time priority.
    fn since(self, before: DropCounters) -> u64 {
        let others = self
            .udp_rcvbuf
            .saturating_sub(before.udp_rcvbuf)
            .saturating_sub(self.own_sockets.saturating_sub(before.own_sockets));
        self.interfaces.saturating_sub(before.interfaces) + others
    }
}

/// `/proc/<tid>/schedstat`: nanoseconds on a CPU, nanoseconds waiting on a run queue,
/// time slices.
fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// Sum of the transmit drops of `interfaces` in `/proc/net/dev` (packets the kernel
/// had for the node and could not queue).
fn tx_drops(text: &str, interfaces: &[String]) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| interfaces.iter().any(|i| i == name.trim()))
        // Receive: bytes packets errs drop fifo frame compressed multicast; then
        // transmit: bytes packets errs drop ...
        .filter_map(|(_, stats)| stats.split_whitespace().nth(11)?.parse::<u64>().ok())
        .sum()
}

/// A counter from `/proc/net/snmp`, where each protocol has a line of names followed by
/// a line of values, both starting with `prefix`.
fn snmp_counter(text: &str, prefix: &str, name: &str) -> u64 {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A counter from `/proc/net/snmp6`: one `name value` pair per line.
fn snmp6_counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_at_the_nodes_own_sockets_do_not_count() {
        let before = DropCounters {
            interfaces: 10,
            udp_rcvbuf: 100,
            own_sockets: 40,
        };
        let at = |interfaces, udp_rcvbuf, own_sockets| DropCounters {
            interfaces,
            udp_rcvbuf,
            own_sockets,
        };
        // Another program's socket overflowed.
        assert_eq!(at(10, 130, 40).since(before), 30);
        // Only the node's own socket did: nothing to give back.
        assert_eq!(at(10, 130, 70).since(before), 0);
        // Both.
        assert_eq!(at(10, 130, 50).since(before), 20);
        // The interfaces' transmit drops always count; own drops the namespace
        // counter does not show (another reason) subtract nothing from them.
        assert_eq!(at(15, 100, 45).since(before), 5);
    }

    #[test]
    fn host_id_depends_on_the_boot_id_only() {
        let a = host_id_from("7f0c1e0a-4d0e-4a4f-9b9e-2c1d3e4f5a6b");
        assert_eq!(a, host_id_from("7f0c1e0a-4d0e-4a4f-9b9e-2c1d3e4f5a6b"));
        assert_ne!(a, host_id_from("7f0c1e0a-4d0e-4a4f-9b9e-2c1d3e4f5a6c"));
        let here = host_id().expect("a boot id on this machine");
        assert_eq!(host_id(), Some(here), "stable on this machine");
    }

    #[test]
    fn drop_reports_count_from_this_machine_only() {
        let s = Scheduling::start(Realtime::Never);
        let Some(here) = s.host else {
            panic!("no boot id on this machine");
        };
        s.host_drops(&[0; HOST_ID_LEN]);
        assert_eq!(s.describe(), "normal (realtime = never)");
        s.host_drops(&here);
        s.host_drops(&here);
        assert_eq!(s.reports_pending.load(Ordering::Relaxed), 2);
        assert_eq!(
            s.describe(),
            "normal (realtime = never; 2 drop reports from nodes on this machine)"
        );
    }

    #[test]
    fn schedstat_gives_run_and_wait_time() {
        assert_eq!(parse_schedstat("222530 4100 7\n"), Some((222530, 4100)));
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x y z"), None);
    }

    #[test]
    fn transmit_drops_of_our_interfaces_only() {
        let dev = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    2000      20    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
quicap0: 630948000 630948 0 0 0 0 0 0 77000 15 0 551633 0 0 0 0
 quicap-l2: 10 1 0 0 0 0 0 0 10 1 0 7 0 0 0 0
  eth0: 10 1 0 0 0 0 0 0 10 1 0 99 0 0 0 0
";
        let ours = ["quicap0".to_string(), "quicap-l2".to_string()];
        assert_eq!(tx_drops(dev, &ours), 551640);
        assert_eq!(tx_drops(dev, &[]), 0);
        assert_eq!(tx_drops("garbage", &ours), 0);
    }

    #[test]
    fn udp_receive_buffer_errors_from_snmp() {
        let snmp = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
Udp: 542311 0 153455 10011 153455 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
UdpLite: 0 0 0 0 9 0
";
        assert_eq!(snmp_counter(snmp, "Udp:", "RcvbufErrors"), 153455);
        assert_eq!(snmp_counter(snmp, "Udp:", "Missing"), 0);
        assert_eq!(snmp_counter("", "Udp:", "RcvbufErrors"), 0);
        let snmp6 = "Udp6InDatagrams                 12\nUdp6RcvbufErrors                \t5\n";
        assert_eq!(snmp6_counter(snmp6, "Udp6RcvbufErrors"), 5);
        assert_eq!(snmp6_counter(snmp6, "Udp6SndbufErrors"), 0);
    }
}
