//! The routing core's driver: feeds the router the peer table's state, sends what it
//! wants sent, and points relay frames at its next hops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quicap_mesh::{NodeId, RouteInfo};
use tracing::debug;

use super::Node;

const MESH_TICK: Duration = Duration::from_millis(100);
/// The routing core's pace while every link is idle (probed once a second, see
/// [`quicap_mesh::liveness::IDLE_PROBE_INTERVAL_MS`]) and the router has nothing due
/// sooner: a link that closes wakes it at once, one that falls silent is seen within
/// this. While every link is dormant, the core keeps to their probe period: its timers
/// (periodic updates among them) run at the instants of their probes, late by up to
/// that period; a link that starts carrying traffic wakes it at once.
const MESH_QUIET_TICK: Duration = Duration::from_millis(2000);

/// Drives the routing core: re-evaluates neighbors and timers every
/// [`MESH_TICK`] ([`MESH_QUIET_TICK`] while all links are idle) or when a session
/// signals a change, and sends what the router wants sent.
pub(super) async fn mesh_task(node: Arc<Node>) {
    let mut pause = MESH_TICK;
    // Whether every link was idle at the last step.
    let mut was_quiet = true;
    // Next hop per destination, to log changes.
    let mut hops: HashMap<NodeId, NodeId> = HashMap::new();
    loop {
        tokio::select! {
            _ = node.mesh.notify.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        let now = node.now_ms();
        mesh_step(&node, now);
        let routes = node.mesh.routes();
        log_route_changes(&node, &routes, &mut hops);
        update_relays(&node, &routes, now);
        node.held.expire(now);
        // A neighbor the mesh routes through another node keeps its relayed link: the
        // data path sends on it rather than routed through that node. So does one
        // whose relayed link carries proxied flows its direct links cannot.
        let mut keep = node.routed_around(true);
        keep.extend(node.flow_peers.keeps());
        let generation = node.generation.load(std::sync::atomic::Ordering::Relaxed);
        let closed = node.peers.close_superseded_relays(now, &keep, generation);
        if closed > 0 {
            debug!(
                closed,
                "closed relayed links that a direct link or another relayed link supersedes"
            );
        }
        let closed = node.peers.close_renewed(now);
        if closed > 0 {
            debug!(
                closed,
                "closed links made with a certificate its peer renewed"
            );
        }
        let due = Duration::from_millis(node.mesh.poll_timeout().saturating_sub(node.now_ms()));
        let quiet = node.peers.quiet_period();
        if quiet.is_some() && !was_quiet {
            // Traffic has stopped: the memory its queues took goes back to the system.
            crate::heap::release_free();
        }
        was_quiet = quiet.is_some();
        pause = match quiet {
            Some(period) if period > MESH_QUIET_TICK => super::aligned_after(due, period),
            Some(_) => super::aligned_pause(MESH_QUIET_TICK)
                .min(due)
                .max(MESH_TICK),
            None => MESH_TICK,
        };
    }
}

/// Brings the routing core up to date with the peer table, runs its timers and sends
/// what it wants sent.
pub(super) fn mesh_step(node: &Node, now: u64) {
    let neighbors = node.peers.neighbor_state(now);
    for (peer, message) in node.mesh.tick(&neighbors, now) {
        if !node.peers.send_control(&peer, message, now) {
            debug!(%peer, "routing message not queued");
        }
    }
}

/// Logs (at debug) each destination whose next hop changed since the last call.
pub(super) fn log_route_changes(
    node: &Node,
    routes: &[RouteInfo],
    hops: &mut HashMap<NodeId, NodeId>,
) {
    let name = |id: NodeId| node.mesh.name_of(id).unwrap_or_else(|| id.to_string());
    let now: HashMap<NodeId, NodeId> = routes.iter().map(|r| (r.dest, r.next_hop)).collect();
    for r in routes {
        if hops.get(&r.dest) != Some(&r.next_hop) {
            debug!(dest = %name(r.dest), next_hop = %name(r.next_hop), metric = r.metric, "route changed");
        }
    }
    for dest in hops.keys().filter(|d| !now.contains_key(d)) {
        debug!(dest = %name(*dest), "route lost");
    }
    *hops = now;
}

/// Points relay frames at the mesh's current next hops, and accepts them from the
/// direct peers only.
pub(super) fn update_relays(node: &Node, routes: &[RouteInfo], now_ms: u64) {
    let next_hops = routes.iter().filter_map(|route| {
        let hop = node.peers.relay_next_hop(route.next_hop, now_ms)?;
        Some((route.dest, hop))
    });
    node.relays.update(next_hops, node.peers.direct_remotes());
}
