//! The routing state machine of one node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::metric::{self, Metric, INFINITY};
use crate::{seqno_newer, NodeId, Seqno, Time};

/// Timing and damping parameters. The defaults suit links with RTTs from below a
/// millisecond to a few hundred milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interval of full route dumps to every neighbor, in ms (RFC 8966's update interval).
    pub update_interval: u64,
    /// A route not refreshed for this long is dropped, in ms.
    pub route_hold: u64,
    /// An unreachable destination is forgotten (with its feasibility distance) after
    /// this long, in ms.
    pub gc_after: u64,
    /// A selected route is only replaced by one at least this many percent cheaper.
    pub switch_hysteresis_percent: u32,
    /// A link's cost only changes when a new measurement differs by this many percent.
    pub cost_hysteresis_percent: u32,
    /// How far a seqno request may travel, in hops.
    pub request_hops: u8,
    /// The same request is not sent again within this many ms.
    pub request_interval: u64,
    /// Triggered updates for metric changes alone (same seqno, still reachable) go out
    /// at most this often, in ms, all together: link costs that follow a jittery RTT
    /// would otherwise have every node re-advertise to every neighbor many times a
    /// second. New routes, retractions and seqno changes still go out at once.
    pub metric_update_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            update_interval: 4_000,
            route_hold: 14_000,
            gc_after: 180_000,
            switch_hysteresis_percent: 15,
            cost_hysteresis_percent: 25,
            request_hops: 16,
            request_interval: 500,
            metric_update_interval: 1_000,
        }
    }
}

/// One route in an update: `dest` is reachable from the sender at `metric`, as of the
/// destination's sequence number `seqno`. `metric == INFINITY` retracts the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUpdate {
    pub dest: NodeId,
    pub seqno: Seqno,
    pub metric: Metric,
    /// The nodes after the sender on its path to `dest`, `dest` last (empty for the
    /// sender's own route). Informational: shown by `quicap status`, never used to
    /// select routes. At most `MAX_PATH` (16) long.
    pub path: Vec<NodeId>,
}

/// Longest path carried in updates; longer ones are cut (the hop limit is 16 anyway).
pub const MAX_PATH: usize = 16;

/// What routers send each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Routes of the sender.
    Updates(Vec<RouteUpdate>),
    /// "Send me a route to `dest` with a sequence number at least `seqno`": resolves
    /// starvation after a failure (RFC 8966 §3.8.1.2). Forwarded towards `dest` at most
    /// `hops` times.
    Request {
        dest: NodeId,
        seqno: Seqno,
        hops: u8,
    },
}

/// A row of the routing table, for `quicap status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dest: NodeId,
    pub next_hop: NodeId,
    pub metric: Metric,
    pub seqno: Seqno,
    /// The nodes a packet passes: the next hop first, `dest` last.
    pub path: Vec<NodeId>,
}

#[derive(Debug)]
struct Neighbor {
    /// Cost in use (changes only past the hysteresis threshold).
    cost: Metric,
}

#[derive(Debug, Clone)]
struct Entry {
    seqno: Seqno,
    /// The metric the neighbor advertised (without the link cost).
    metric: Metric,
    updated: Time,
    /// The neighbor's path beyond itself.
    path: Vec<NodeId>,
}

#[derive(Debug, Default)]
struct Dest {
    /// Routes to this destination, by the neighbor that advertised them.
    entries: BTreeMap<NodeId, Entry>,
    selected: Option<NodeId>,
    /// Feasibility distance: the best (seqno, metric) this node has advertised.
    fd: Option<(Seqno, Metric)>,
    /// What this node last advertised.
    advertised: Option<(Seqno, Metric)>,
    last_request: Option<(Seqno, Time)>,
    unreachable_since: Option<Time>,
}

/// Distance-vector routing with Babel's feasibility condition.
///
/// Call order: any `handle_*` in any order, each with a non-decreasing `now`; then drain
/// [`Router::poll_transmit`]; sleep until [`Router::poll_timeout`] and call
/// [`Router::handle_timeout`]. [`Router::next_hop`] may be called at any time.
#[derive(Debug)]
pub struct Router {
    id: NodeId,
    seqno: Seqno,
    config: Config,
    neighbors: BTreeMap<NodeId, Neighbor>,
    dests: BTreeMap<NodeId, Dest>,
    outbox: VecDeque<(NodeId, Message)>,
    triggered: BTreeSet<NodeId>,
    /// Destinations whose metric changed, waiting for `metric_due`.
    metric_changed: BTreeSet<NodeId>,
    metric_due: Option<Time>,
    /// When metric changes were last let out.
    metric_sent: Option<Time>,
    next_periodic: Time,
    /// When suppressed seqno requests are due again.
    request_retry: Option<Time>,
    forwarded_requests: BTreeMap<(NodeId, Seqno), Time>,
}

impl Router {
    pub fn new(id: NodeId, config: Config, now: Time) -> Self {
        Router {
            id,
            seqno: 0,
            next_periodic: now + config.update_interval,
            config,
            neighbors: BTreeMap::new(),
            dests: BTreeMap::new(),
            outbox: VecDeque::new(),
            triggered: BTreeSet::new(),
            metric_changed: BTreeSet::new(),
            metric_due: None,
            metric_sent: None,
            request_retry: None,
            forwarded_requests: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The neighbor to send a packet for `dest` to, if `dest` is reachable.
    pub fn next_hop(&self, dest: NodeId) -> Option<NodeId> {
        let d = self.dests.get(&dest)?;
        let n = d.selected?;
        (self.total(d, n) != INFINITY).then_some(n)
    }

    /// The routing table, sorted by destination.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.dests
            .iter()
            .filter_map(|(dest, d)| {
                let n = d.selected?;
                let metric = self.total(d, n);
                let entry = d.entries.get(&n)?;
                (metric != INFINITY).then(|| RouteInfo {
                    dest: *dest,
                    next_hop: n,
                    metric,
                    seqno: entry.seqno,
                    path: full_path(n, *dest, &entry.path),
                })
            })
            .collect()
    }

    /// A neighbor became reachable over a link of the given cost.
    pub fn handle_link_up(&mut self, neighbor: NodeId, cost: Metric, now: Time) {
        let cost = cost.clamp(1, INFINITY - 1);
        self.neighbors.insert(neighbor, Neighbor { cost });
        let dump = self.full_dump();
        self.outbox.push_back((neighbor, Message::Updates(dump)));
        self.reselect_all(now);
    }

    /// A new cost measurement of the link to `neighbor`; applied only if it differs
    /// enough from the cost in use, so that jitter does not move routes.
    pub fn handle_link_cost(&mut self, neighbor: NodeId, cost: Metric, now: Time) {
        let cost = cost.clamp(1, INFINITY - 1);
        let Some(n) = self.neighbors.get_mut(&neighbor) else {
            return;
        };
        let diff = u32::from(cost.abs_diff(n.cost));
        if diff * 100 <= u32::from(n.cost) * self.config.cost_hysteresis_percent {
            return;
        }
        n.cost = cost;
        self.reselect_all(now);
    }

    /// The link to `neighbor` failed: every route through it is gone at once.
    pub fn handle_link_down(&mut self, neighbor: NodeId, now: Time) {
        if self.neighbors.remove(&neighbor).is_none() {
            return;
        }
        for d in self.dests.values_mut() {
            d.entries.remove(&neighbor);
        }
        self.reselect_all(now);
    }

    pub fn handle_message(&mut self, from: NodeId, message: Message, now: Time) {
        if !self.neighbors.contains_key(&from) {
            return;
        }
        match message {
            Message::Updates(updates) => {
                let mut touched = BTreeSet::new();
                for u in updates {
                    if u.dest == self.id {
                        // Our own route, echoed with a newer seqno than ours: we restarted
                        // and must move past it for our new routes to be accepted.
                        if seqno_newer(u.seqno, self.seqno) {
                            self.seqno = u.seqno.wrapping_add(1);
                            self.triggered.insert(self.id);
                        }
                        continue;
                    }
                    let d = self.dests.entry(u.dest).or_default();
                    d.entries.insert(
                        from,
                        Entry {
                            seqno: u.seqno,
                            metric: u.metric,
                            updated: now,
                            path: u.path,
                        },
                    );
                    touched.insert(u.dest);
                }
                for dest in touched {
                    self.reselect(dest, now);
                }
            }
            Message::Request { dest, seqno, hops } => {
                self.handle_request(from, dest, seqno, hops, now)
            }
        }
    }

    fn handle_request(&mut self, from: NodeId, dest: NodeId, seqno: Seqno, hops: u8, now: Time) {
        if dest == self.id {
            if seqno_newer(seqno, self.seqno) {
                self.seqno = seqno;
            }
            self.triggered.insert(self.id);
            return;
        }
        let Some(d) = self.dests.get(&dest) else {
            return;
        };
        if let Some(n) = d.selected {
            if let Some(e) = d.entries.get(&n) {
                if e.metric != INFINITY && !seqno_newer(seqno, e.seqno) {
                    self.triggered.insert(dest);
                    return;
                }
            }
        }
        if hops <= 1 {
            return;
        }
        if let Some(t) = self.forwarded_requests.get(&(dest, seqno)) {
            if now < t + self.config.request_interval {
                return;
            }
        }
        // Towards the destination: the selected next hop, else whoever knows the newest
        // route to it.
        let towards = d.selected.filter(|n| *n != from).or_else(|| {
            d.entries
                .iter()
                .filter(|(n, _)| **n != from)
                .max_by(|a, b| {
                    let newer = seqno_newer(a.1.seqno, b.1.seqno);
                    newer
                        .cmp(&seqno_newer(b.1.seqno, a.1.seqno))
                        .then(b.0.cmp(a.0))
                })
                .map(|(n, _)| *n)
        });
        if let Some(n) = towards {
            self.forwarded_requests.insert((dest, seqno), now);
            self.outbox.push_back((
                n,
                Message::Request {
                    dest,
                    seqno,
                    hops: hops - 1,
                },
            ));
        }
    }

    /// The earliest time [`Router::handle_timeout`] has work to do. Expired routes are
    /// purged at these ticks, so a route lives between `route_hold` and `route_hold +
    /// update_interval` without refresh; link failures are handled at once by
    /// [`Router::handle_link_down`].
    pub fn poll_timeout(&self) -> Time {
        [self.request_retry, self.metric_due]
            .into_iter()
            .flatten()
            .fold(self.next_periodic, Time::min)
    }

    pub fn handle_timeout(&mut self, now: Time) {
        let hold = self.config.route_hold;
        let mut expired = Vec::new();
        for (dest, d) in self.dests.iter_mut() {
            let before = d.entries.len();
            d.entries.retain(|_, e| now < e.updated + hold);
            if d.entries.len() != before {
                expired.push(*dest);
            }
        }
        for dest in expired {
            self.reselect(dest, now);
        }
        let gc = self.config.gc_after;
        self.dests.retain(|_, d| {
            d.unreachable_since.is_none_or(|t| now < t + gc) || !d.entries.is_empty()
        });
        self.forwarded_requests
            .retain(|_, t| now < *t + 10 * self.config.request_interval);
        if self.request_retry.is_some_and(|t| now >= t) {
            self.request_retry = None;
            self.request_starving(now);
        }
        if self.metric_due.is_some_and(|t| now >= t) {
            self.release_metric_changes(now);
        }
        if now >= self.next_periodic {
            self.next_periodic = now + self.config.update_interval;
            let dump = self.full_dump();
            for n in self.neighbors.keys() {
                self.outbox.push_back((*n, Message::Updates(dump.clone())));
            }
            self.triggered.clear();
            self.metric_changed.clear();
            self.metric_due = None;
            self.request_starving(now);
        }
    }

    /// Asks again for routes to destinations that have only unfeasible routes.
    fn request_starving(&mut self, now: Time) {
        let starving: Vec<NodeId> = self
            .dests
            .iter()
            .filter(|(_, d)| {
                d.selected.is_none() && d.entries.values().any(|e| e.metric != INFINITY)
            })
            .map(|(k, _)| *k)
            .collect();
        for dest in starving {
            self.request(dest, now);
        }
    }

    /// The next message to send, and to which neighbor.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        if !self.triggered.is_empty() {
            let dests: Vec<NodeId> = std::mem::take(&mut self.triggered).into_iter().collect();
            let updates: Vec<RouteUpdate> = dests.into_iter().map(|d| self.advertise(d)).collect();
            for n in self.neighbors.keys() {
                self.outbox
                    .push_back((*n, Message::Updates(updates.clone())));
            }
        }
        self.outbox.pop_front()
    }

    fn total(&self, d: &Dest, neighbor: NodeId) -> Metric {
        match (d.entries.get(&neighbor), self.neighbors.get(&neighbor)) {
            (Some(e), Some(n)) => metric::add(e.metric, n.cost),
            _ => INFINITY,
        }
    }

    /// RFC 8966 §3.5.1: an advertised (seqno, metric) can be used without risk of a loop
    /// if it is newer than, or as new and strictly better than, what we advertised.
    fn feasible(d: &Dest, e: &Entry) -> bool {
        d.fd.is_none_or(|fd| improves(e.seqno, e.metric, fd))
    }

    fn reselect_all(&mut self, now: Time) {
        let dests: Vec<NodeId> = self.dests.keys().copied().collect();
        for dest in dests {
            self.reselect(dest, now);
        }
    }

    fn reselect(&mut self, dest: NodeId, now: Time) {
        let Some(d) = self.dests.get(&dest) else {
            return;
        };
        let candidates = d
            .entries
            .iter()
            .filter(|(_, e)| e.metric != INFINITY && Self::feasible(d, e))
            .map(|(n, _)| (self.total(d, *n), *n))
            .filter(|(m, _)| *m != INFINITY);
        let best = candidates.min();
        let current = d
            .selected
            .filter(|n| {
                d.entries
                    .get(n)
                    .is_some_and(|e| e.metric != INFINITY && Self::feasible(d, e))
            })
            .map(|n| (self.total(d, n), n))
            .filter(|(m, _)| *m != INFINITY);
        let chosen = match (current, best) {
            (Some((cm, cn)), Some((bm, bn))) => {
                let margin = (u32::from(cm) * self.config.switch_hysteresis_percent / 100).max(1);
                if u32::from(bm) + margin <= u32::from(cm) {
                    Some(bn)
                } else {
                    Some(cn)
                }
            }
            (None, best) => best.map(|(_, n)| n),
            (current, None) => current.map(|(_, n)| n),
        };
        let has_unfeasible = chosen.is_none() && d.entries.values().any(|e| e.metric != INFINITY);
        let new_value = chosen.map(|n| {
            let seqno = d.entries.get(&n).map_or(0, |e| e.seqno);
            (seqno, self.total(d, n))
        });
        let old_value = d.advertised;
        let Some(d) = self.dests.get_mut(&dest) else {
            return;
        };
        d.selected = chosen;
        d.unreachable_since = match (chosen, d.unreachable_since) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t),
            (None, None) => Some(now),
        };
        match change(old_value, new_value) {
            Change::None => {}
            Change::Urgent => {
                self.triggered.insert(dest);
            }
            Change::Metric => {
                self.metric_changed.insert(dest);
                let due = self
                    .metric_sent
                    .map_or(now, |t| now.max(t + self.config.metric_update_interval));
                if due <= now {
                    self.release_metric_changes(now);
                } else if self.metric_due.is_none() {
                    self.metric_due = Some(due);
                }
            }
        }
        if has_unfeasible {
            self.request(dest, now);
        }
    }

    /// Lets the held metric changes out with the next [`Router::poll_transmit`].
    fn release_metric_changes(&mut self, now: Time) {
        self.triggered.append(&mut self.metric_changed);
        self.metric_due = None;
        self.metric_sent = Some(now);
    }

    fn request(&mut self, dest: NodeId, now: Time) {
        let Some(d) = self.dests.get_mut(&dest) else {
            return;
        };
        let seqno = d.fd.map_or(0, |(s, _)| s.wrapping_add(1));
        if let Some((s, t)) = d.last_request {
            if s == seqno && now < t + self.config.request_interval {
                let due = t + self.config.request_interval;
                self.request_retry = Some(self.request_retry.map_or(due, |r| r.min(due)));
                return;
            }
        }
        d.last_request = Some((seqno, now));
        let hops = self.config.request_hops;
        let targets: Vec<NodeId> = d
            .entries
            .iter()
            .filter(|(_, e)| e.metric != INFINITY)
            .map(|(n, _)| *n)
            .collect();
        for n in targets {
            self.outbox
                .push_back((n, Message::Request { dest, seqno, hops }));
        }
    }

    /// What to tell neighbors about `dest` now; records it as advertised and lowers the
    /// feasibility distance accordingly.
    fn advertise(&mut self, dest: NodeId) -> RouteUpdate {
        if dest == self.id {
            return RouteUpdate {
                dest,
                seqno: self.seqno,
                metric: 0,
                path: Vec::new(),
            };
        }
        let value = self.dests.get(&dest).and_then(|d| {
            let n = d.selected?;
            let e = d.entries.get(&n)?;
            let m = self.total(d, n);
            (m != INFINITY).then(|| (e.seqno, m, full_path(n, dest, &e.path)))
        });
        let Some(d) = self.dests.get_mut(&dest) else {
            return RouteUpdate {
                dest,
                seqno: 0,
                metric: INFINITY,
                path: Vec::new(),
            };
        };
        match value {
            Some((seqno, m, path)) => {
                if d.fd.is_none_or(|fd| improves(seqno, m, fd)) {
                    d.fd = Some((seqno, m));
                }
                d.advertised = Some((seqno, m));
                RouteUpdate {
                    dest,
                    seqno,
                    metric: m,
                    path,
                }
            }
            None => {
                let seqno = d.advertised.map_or(0, |(s, _)| s);
                d.advertised = None;
                RouteUpdate {
                    dest,
                    seqno,
                    metric: INFINITY,
                    path: Vec::new(),
                }
            }
        }
    }

    fn full_dump(&mut self) -> Vec<RouteUpdate> {
        let mut dests: Vec<NodeId> = vec![self.id];
        dests.extend(
            self.dests
                .iter()
                .filter(|(_, d)| d.selected.is_some() || d.advertised.is_some())
                .map(|(k, _)| *k),
        );
        dests.into_iter().map(|d| self.advertise(d)).collect()
    }
}

/// The path through neighbor `hop`: the hop, then what it announced, ending at `dest`
/// (restored if the announced path was cut short), at most [`MAX_PATH`] long.
fn full_path(hop: NodeId, dest: NodeId, beyond: &[NodeId]) -> Vec<NodeId> {
    let mut path = Vec::with_capacity(beyond.len() + 1);
    path.push(hop);
    path.extend(beyond.iter().copied().take(MAX_PATH - 1));
    if path.last() != Some(&dest) {
        path.truncate(MAX_PATH - 1);
        path.push(dest);
    }
    path
}

/// True if (`seqno`, `metric`) is newer than `than`, or as new and strictly smaller.
fn improves(seqno: Seqno, metric: Metric, than: (Seqno, Metric)) -> bool {
    seqno_newer(seqno, than.0) || (seqno == than.0 && metric < than.1)
}

/// How a change of what we advertise for a destination is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Not at all (until the next full dump).
    None,
    /// With the next batch of metric changes ([`Config::metric_update_interval`]): the
    /// metric moved by more than an eighth.
    Metric,
    /// At once: reachability or seqno changed.
    Urgent,
}

fn change(old: Option<(Seqno, Metric)>, new: Option<(Seqno, Metric)>) -> Change {
    match (old, new) {
        (None, None) => Change::None,
        (Some(_), None) | (None, Some(_)) => Change::Urgent,
        (Some((os, _)), Some((ns, _))) if os != ns => Change::Urgent,
        (Some((_, om)), Some((_, nm))) if u32::from(om.abs_diff(nm)) * 8 > u32::from(om) => {
            Change::Metric
        }
        _ => Change::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut Router) -> Vec<(NodeId, Message)> {
        std::iter::from_fn(|| r.poll_transmit()).collect()
    }

    fn updates_to(msgs: &[(NodeId, Message)], to: NodeId) -> Vec<RouteUpdate> {
        msgs.iter()
            .filter(|(n, _)| *n == to)
            .flat_map(|(_, m)| match m {
                Message::Updates(u) => u.clone(),
                Message::Request { .. } => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn learns_a_neighbor_and_a_node_behind_it() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        r.handle_link_up(NodeId(2), 10, 0);
        let out = drain(&mut r);
        assert!(updates_to(&out, NodeId(2)).contains(&RouteUpdate {
            dest: NodeId(1),
            seqno: 0,
            metric: 0,
            path: vec![],
        }));
        r.handle_message(
            NodeId(2),
            Message::Updates(vec![
                RouteUpdate {
                    dest: NodeId(2),
                    seqno: 0,
                    metric: 0,
                    path: vec![],
                },
                RouteUpdate {
                    dest: NodeId(3),
                    seqno: 0,
                    metric: 10,
                    path: vec![],
                },
            ]),
            1,
        );
        assert_eq!(r.next_hop(NodeId(2)), Some(NodeId(2)));
        assert_eq!(r.next_hop(NodeId(3)), Some(NodeId(2)));
        let routes = r.routes();
        assert_eq!(
            routes[1],
            RouteInfo {
                dest: NodeId(3),
                next_hop: NodeId(2),
                metric: 20,
                seqno: 0,
                path: vec![NodeId(2), NodeId(3)],
            }
        );
        // The new routes are announced to the neighbors.
        let out = drain(&mut r);
        assert!(updates_to(&out, NodeId(2))
            .iter()
            .any(|u| u.dest == NodeId(3) && u.metric == 20));
    }

    /// A hub with ten neighbors whose link costs swing back and forth every 100 ms
    /// (a loaded host's RTTs below a millisecond) sends metric changes at most once a
    /// second; a neighbor that goes away is announced at once.
    #[test]
    fn metric_changes_are_batched_and_retractions_are_not() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        let neighbors: Vec<NodeId> = (2..12).map(NodeId).collect();
        for &n in &neighbors {
            r.handle_link_up(n, 10, 0);
            r.handle_message(
                n,
                Message::Updates(vec![RouteUpdate {
                    dest: n,
                    seqno: 0,
                    metric: 0,
                    path: vec![],
                }]),
                0,
            );
        }
        drain(&mut r);
        let mut messages = 0;
        let mut now = 0;
        for round in 0..30u64 {
            now = 10 + round * 100;
            let cost = if round % 2 == 0 { 30 } else { 10 };
            for &n in &neighbors {
                r.handle_link_cost(n, cost, now);
            }
            if r.poll_timeout() <= now {
                r.handle_timeout(now);
            }
            messages += drain(&mut r).len();
        }
        // 3 s: at most 4 batches (at once, then every second), one message per neighbor
        // each; without batching it would be 30.
        assert!(messages > 0, "metric changes were never announced");
        assert!(
            messages <= 4 * neighbors.len(),
            "{messages} messages in 3 s"
        );
        // A retraction goes out at once.
        now += 10;
        r.handle_link_down(NodeId(5), now);
        let out = drain(&mut r);
        assert!(updates_to(&out, NodeId(2))
            .iter()
            .any(|u| u.dest == NodeId(5) && u.metric == INFINITY));
    }

    #[test]
    fn ignores_messages_from_non_neighbors() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        r.handle_message(
            NodeId(9),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 0,
                metric: 0,
                path: vec![],
            }]),
            0,
        );
        assert_eq!(r.next_hop(NodeId(9)), None);
    }

    #[test]
    fn unfeasible_route_is_not_used_and_triggers_a_request() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        r.handle_link_up(NodeId(2), 10, 0);
        r.handle_link_up(NodeId(3), 10, 0);
        r.handle_message(
            NodeId(2),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 5,
                metric: 10,
                path: vec![],
            }]),
            0,
        );
        drain(&mut r); // advertises 9 at metric 20: FD = (5, 20)
        r.handle_message(
            NodeId(3),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 5,
                metric: 30,
                path: vec![],
            }]),
            1,
        );
        r.handle_link_down(NodeId(2), 2);
        // Via 3 the reported metric 30 is not below FD 20: could be a loop through us.
        assert_eq!(r.next_hop(NodeId(9)), None);
        let out = drain(&mut r);
        assert!(
            out.contains(&(
                NodeId(3),
                Message::Request {
                    dest: NodeId(9),
                    seqno: 6,
                    hops: 16
                }
            )),
            "{out:?}"
        );
        // The newer seqno makes it feasible.
        r.handle_message(
            NodeId(3),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 6,
                metric: 30,
                path: vec![],
            }]),
            3,
        );
        assert_eq!(r.next_hop(NodeId(9)), Some(NodeId(3)));
    }

    #[test]
    fn hysteresis_keeps_a_route_against_small_improvements() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        r.handle_link_up(NodeId(2), 10, 0);
        r.handle_link_up(NodeId(3), 10, 0);
        r.handle_message(
            NodeId(2),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 1,
                metric: 100,
                path: vec![],
            }]),
            0,
        );
        assert_eq!(r.next_hop(NodeId(9)), Some(NodeId(2)));
        r.handle_message(
            NodeId(3),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 2,
                metric: 95,
                path: vec![],
            }]),
            1,
        );
        assert_eq!(
            r.next_hop(NodeId(9)),
            Some(NodeId(2)),
            "5 % better is not worth a switch"
        );
        r.handle_message(
            NodeId(3),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(9),
                seqno: 2,
                metric: 50,
                path: vec![],
            }]),
            2,
        );
        assert_eq!(r.next_hop(NodeId(9)), Some(NodeId(3)));
    }

    #[test]
    fn small_cost_changes_are_ignored() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        r.handle_link_up(NodeId(2), 100, 0);
        r.handle_message(
            NodeId(2),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(2),
                seqno: 0,
                metric: 0,
                path: vec![],
            }]),
            0,
        );
        r.handle_link_cost(NodeId(2), 110, 1);
        assert_eq!(r.routes()[0].metric, 100);
        r.handle_link_cost(NodeId(2), 200, 2);
        assert_eq!(r.routes()[0].metric, 200);
    }

    #[test]
    fn owner_answers_a_request_with_a_newer_seqno() {
        let mut r = Router::new(NodeId(1), Config::default(), 0);
        r.handle_link_up(NodeId(2), 10, 0);
        drain(&mut r);
        r.handle_message(
            NodeId(2),
            Message::Request {
                dest: NodeId(1),
                seqno: 7,
                hops: 3,
            },
            1,
        );
        let out = drain(&mut r);
        assert!(updates_to(&out, NodeId(2)).contains(&RouteUpdate {
            dest: NodeId(1),
            seqno: 7,
            metric: 0,
            path: vec![],
        }));
    }

    #[test]
    fn routes_expire_without_refresh() {
        let config = Config::default();
        let hold = config.route_hold;
        let mut r = Router::new(NodeId(1), config, 0);
        r.handle_link_up(NodeId(2), 10, 0);
        r.handle_message(
            NodeId(2),
            Message::Updates(vec![RouteUpdate {
                dest: NodeId(3),
                seqno: 0,
                metric: 10,
                path: vec![],
            }]),
            0,
        );
        assert_eq!(r.next_hop(NodeId(3)), Some(NodeId(2)));
        r.handle_timeout(hold + 1);
        assert_eq!(r.next_hop(NodeId(3)), None);
    }
}
