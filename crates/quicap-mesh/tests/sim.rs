//! Deterministic simulation of many routers: virtual clock, seeded randomness, links with
//! latency, loss and failures. After every message delivered, the receiving router's
//! forwarding paths are walked to check that no loop exists at that instant.
//!
//! Each test prints its convergence figures (run with `--nocapture` to see them).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use quicap_mesh::{link_cost, Config, Message, NodeId, Router, Time};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
struct Link {
    latency: Time,
    up: bool,
}

struct Sim {
    now: Time,
    routers: Vec<Router>,
    links: BTreeMap<(usize, usize), Link>,
    queue: BinaryHeap<Reverse<(Time, u64, usize, usize)>>,
    payloads: BTreeMap<u64, Message>,
    seq: u64,
    rng: StdRng,
    loss_percent: u32,
    delivered: u64,
    loop_checks: u64,
    index: HashMap<NodeId, usize>,
}

fn id(i: usize) -> NodeId {
    // Spread ids out so that ordering by id differs from ordering by index.
    NodeId((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

impl Sim {
    fn new(n: usize, seed: u64) -> Sim {
        Sim {
            now: 0,
            routers: (0..n)
                .map(|i| Router::new(id(i), Config::default(), 0))
                .collect(),
            links: BTreeMap::new(),
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            loss_percent: 0,
            delivered: 0,
            loop_checks: 0,
            index: (0..n).map(|i| (id(i), i)).collect(),
        }
    }

    fn index(&self, node: NodeId) -> usize {
        self.index[&node]
    }

    fn adjacency(&self) -> Vec<Vec<usize>> {
        let mut adj = vec![Vec::new(); self.routers.len()];
        for (&(p, q), l) in &self.links {
            if l.up {
                adj[p].push(q);
                adj[q].push(p);
            }
        }
        adj
    }

    /// The component number of every node over links that are up.
    fn components(&self) -> Vec<usize> {
        let adj = self.adjacency();
        let mut comp = vec![usize::MAX; adj.len()];
        for start in 0..adj.len() {
            if comp[start] != usize::MAX {
                continue;
            }
            comp[start] = start;
            let mut todo = vec![start];
            while let Some(x) = todo.pop() {
                for &y in &adj[x] {
                    if comp[y] == usize::MAX {
                        comp[y] = start;
                        todo.push(y);
                    }
                }
            }
        }
        comp
    }

    fn key(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    fn cost(latency: Time) -> u16 {
        link_cost(2 * latency * 1000, 0)
    }

    fn add_link(&mut self, a: usize, b: usize, latency: Time) {
        self.links
            .insert(Self::key(a, b), Link { latency, up: false });
        self.set_link(a, b, true);
    }

    fn set_link(&mut self, a: usize, b: usize, up: bool) {
        let Some(link) = self.links.get_mut(&Self::key(a, b)) else {
            return;
        };
        if link.up == up {
            return;
        }
        link.up = up;
        let latency = link.latency;
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            if up {
                self.routers[x].handle_link_up(id(y), Self::cost(latency), now);
            } else {
                self.routers[x].handle_link_down(id(y), now);
            }
            self.flush(x);
        }
    }

    fn flush(&mut self, from: usize) {
        while let Some((to, msg)) = self.routers[from].poll_transmit() {
            let to = self.index(to);
            let Some(link) = self.links.get(&Self::key(from, to)).copied() else {
                continue;
            };
            if !link.up || self.rng.random_range(0..100) < self.loss_percent {
                continue;
            }
            self.seq += 1;
            self.payloads.insert(self.seq, msg);
            self.queue
                .push(Reverse((self.now + link.latency, self.seq, from, to)));
        }
        self.check_no_loop_from(from);
    }

    /// Runs the simulation until `until` (virtual ms).
    fn run_until(&mut self, until: Time) {
        loop {
            let next_msg = self
                .queue
                .peek()
                .map(|Reverse((t, ..))| *t)
                .unwrap_or(Time::MAX);
            let next_timer = self
                .routers
                .iter()
                .map(Router::poll_timeout)
                .min()
                .unwrap_or(Time::MAX);
            let next = next_msg.min(next_timer);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_msg == next {
                let Some(Reverse((_, seq, from, to))) = self.queue.pop() else {
                    continue;
                };
                let msg = self.payloads.remove(&seq).expect("payload");
                if !self.links.get(&Self::key(from, to)).is_some_and(|l| l.up) {
                    continue;
                }
                self.delivered += 1;
                self.routers[to].handle_message(id(from), msg, self.now);
                self.flush(to);
            } else {
                for i in 0..self.routers.len() {
                    if self.routers[i].poll_timeout() <= self.now {
                        self.routers[i].handle_timeout(self.now);
                        self.flush(i);
                    }
                }
            }
        }
    }

    /// Follows next hops from `start` to every destination; panics on a loop.
    fn check_no_loop_from(&mut self, start: usize) {
        self.loop_checks += 1;
        let n = self.routers.len();
        for dest in 0..n {
            if dest == start {
                continue;
            }
            let mut at = start;
            let mut steps = 0;
            while at != dest {
                steps += 1;
                assert!(
                    steps <= n,
                    "forwarding loop towards node {dest} from node {start} at t={} ms",
                    self.now
                );
                match self.routers[at].next_hop(id(dest)) {
                    Some(next) => at = self.index(next),
                    None => break,
                }
            }
        }
    }

    /// Number of nodes in `a`'s component.
    fn component_size(&self, a: usize) -> usize {
        let comp = self.components();
        comp.iter().filter(|c| **c == comp[a]).count()
    }

    /// True when every node routes to every node of its component (and only to those)
    /// along next hops that reach the destination.
    fn converged(&self) -> bool {
        let n = self.routers.len();
        let comp = self.components();
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let has = self.routers[a].next_hop(id(b)).is_some();
                if has != (comp[a] == comp[b]) {
                    return false;
                }
                if has {
                    let mut at = a;
                    let mut steps = 0;
                    while at != b {
                        match self.routers[at].next_hop(id(b)) {
                            Some(next) => at = self.index(next),
                            None => return false,
                        }
                        steps += 1;
                        if steps > n {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Advances in 50 ms steps until converged; returns how long it took.
    fn time_to_converge(&mut self, limit: Time) -> Option<Time> {
        let start = self.now;
        while self.now < start + limit {
            if self.converged() {
                return Some(self.now - start);
            }
            let t = self.now + 50;
            self.run_until(t);
        }
        self.converged().then(|| self.now - start)
    }

    /// True if every route's reported path is the walk along next hops.
    fn paths_match(&self) -> bool {
        (0..self.routers.len()).all(|a| {
            self.routers[a].routes().iter().all(|r| {
                let mut walk = Vec::new();
                let mut at = a;
                while id(at) != r.dest && walk.len() <= self.routers.len() {
                    match self.routers[at].next_hop(r.dest) {
                        Some(next) => {
                            walk.push(next);
                            at = self.index(next);
                        }
                        None => return false,
                    }
                }
                walk == r.path
            })
        })
    }

    /// Average ratio of route metric to the cheapest possible path (1.0 = optimal).
    fn stretch(&self) -> f64 {
        let n = self.routers.len();
        let mut total = 0.0;
        let mut count = 0;
        for a in 0..n {
            let best = self.dijkstra(a);
            for r in self.routers[a].routes() {
                let b = self.index(r.dest);
                if let Some(opt) = best.get(&b) {
                    total += f64::from(r.metric) / f64::from(*opt);
                    count += 1;
                }
            }
        }
        total / f64::from(count.max(1))
    }

    fn dijkstra(&self, a: usize) -> BTreeMap<usize, u32> {
        let adj = self.adjacency();
        let mut dist = BTreeMap::from([(a, 0u32)]);
        let mut heap = BinaryHeap::from([Reverse((0u32, a))]);
        while let Some(Reverse((d, x))) = heap.pop() {
            if dist.get(&x).is_some_and(|best| *best < d) {
                continue;
            }
            for &other in &adj[x] {
                let latency = self.links[&Self::key(x, other)].latency;
                let nd = d + u32::from(Self::cost(latency));
                if dist.get(&other).is_none_or(|cur| nd < *cur) {
                    dist.insert(other, nd);
                    heap.push(Reverse((nd, other)));
                }
            }
        }
        dist.remove(&a);
        dist
    }
}

/// A connected random graph: a random spanning tree plus extra random edges, with
/// latencies of 1-20 ms.
fn random_topology(sim: &mut Sim, n: usize, extra: usize) {
    for i in 1..n {
        let j = sim.rng.random_range(0..i);
        let lat = sim.rng.random_range(1..=20);
        sim.add_link(i, j, lat);
    }
    let mut added = 0;
    while added < extra {
        let a = sim.rng.random_range(0..n);
        let b = sim.rng.random_range(0..n);
        if a != b && !sim.links.contains_key(&Sim::key(a, b)) {
            let lat = sim.rng.random_range(1..=20);
            sim.add_link(a, b, lat);
            added += 1;
        }
    }
}

#[test]
fn random_200_node_topology_converges() {
    let mut sim = Sim::new(200, 1);
    random_topology(&mut sim, 200, 200);
    let took = sim
        .time_to_converge(30_000)
        .expect("did not converge within 30 s");
    let stretch = sim.stretch();
    println!(
        "200 nodes, {} links: converged in {took} ms (virtual), {} messages, route stretch {stretch:.3}, {} loop checks",
        sim.links.len(),
        sim.delivered,
        sim.loop_checks
    );
    assert!(took <= 10_000, "converged only after {took} ms");
    assert!(
        stretch < 1.3,
        "routes are {stretch:.2}x the shortest paths on average"
    );
    // Paths shown by status are exactly the hops packets take.
    let t = sim.now + 5_000;
    sim.run_until(t);
    assert!(
        sim.paths_match(),
        "a reported path differs from the next-hop walk"
    );
}

#[test]
fn link_failures_reconverge_within_a_bounded_time() {
    let mut sim = Sim::new(60, 2);
    random_topology(&mut sim, 60, 60);
    sim.time_to_converge(30_000).expect("initial convergence");
    let mut worst = 0;
    for round in 0..10 {
        // Fail a random link that does not disconnect the graph.
        let keys: Vec<(usize, usize)> = sim
            .links
            .iter()
            .filter(|(_, l)| l.up)
            .map(|(k, _)| *k)
            .collect();
        let (a, b) = loop {
            let k = keys[sim.rng.random_range(0..keys.len())];
            sim.set_link(k.0, k.1, false);
            if sim.component_size(k.0) == 60 {
                break k;
            }
            sim.set_link(k.0, k.1, true);
        };
        let took = sim.time_to_converge(30_000).expect("reconvergence");
        worst = worst.max(took);
        println!("round {round}: link {a}-{b} failed, routes correct again after {took} ms");
        sim.set_link(a, b, true);
        sim.time_to_converge(30_000).expect("recovery");
    }
    println!(
        "worst reconvergence after a link failure: {worst} ms; {} messages",
        sim.delivered
    );
    assert!(worst <= 2_000, "reconvergence took {worst} ms");
}

#[test]
fn no_forwarding_loop_under_loss_and_churn() {
    let mut sim = Sim::new(40, 3);
    random_topology(&mut sim, 40, 40);
    sim.loss_percent = 5;
    sim.run_until(5_000);
    let keys: Vec<(usize, usize)> = sim.links.keys().copied().collect();
    for step in 0..300 {
        let k = keys[sim.rng.random_range(0..keys.len())];
        let up = sim.rng.random_range(0..2) == 0;
        sim.set_link(k.0, k.1, up);
        let t = sim.now + sim.rng.random_range(1..200);
        sim.run_until(t);
        if step % 100 == 99 {
            println!(
                "churn step {step}: t={} ms, {} messages, {} loop checks",
                sim.now, sim.delivered, sim.loop_checks
            );
        }
    }
    for k in keys {
        sim.set_link(k.0, k.1, true);
    }
    let took = sim
        .time_to_converge(60_000)
        .expect("convergence after churn");
    println!("after churn with 5 % loss: converged {took} ms after all links came back, {} loop checks passed", sim.loop_checks);
}

#[test]
fn healed_partition_re_merges() {
    let n = 80;
    let mut sim = Sim::new(n, 4);
    // Two random halves joined by three bridges.
    let half = n / 2;
    for i in 1..half {
        let j = sim.rng.random_range(0..i);
        sim.add_link(i, j, 2);
    }
    for i in half + 1..n {
        let j = sim.rng.random_range(half..i);
        sim.add_link(i, j, 2);
    }
    let bridges = [(0, half), (half - 1, n - 1), (half / 2, half + half / 2)];
    for (a, b) in bridges {
        sim.add_link(a, b, 5);
    }
    sim.time_to_converge(30_000).expect("initial convergence");
    for (a, b) in bridges {
        sim.set_link(a, b, false);
    }
    let split = sim
        .time_to_converge(60_000)
        .expect("partition never settled");
    println!("partition: routes to the other side gone after {split} ms");
    for (a, b) in bridges {
        sim.set_link(a, b, true);
    }
    let merged = sim.time_to_converge(30_000).expect("did not re-merge");
    println!("healed: all {n} nodes route to each other again after {merged} ms");
    assert!(merged <= 2_000, "re-merge took {merged} ms");
}
