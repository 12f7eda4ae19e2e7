//! This node's heartbeat: every [`HEARTBEAT`] it sets its key with a TTL of
//! [`NODE_TTL`] (the other nodes take it for dead once the key expires), which
//! also tells whether Redis is up; then it reaps dead nodes: their members'
//! presence entries go, and their rooms get `presence:leave` for each.

use std::sync::Weak;

use super::{presence_event, Cluster, HEARTBEAT, NODE_TTL};
use crate::protocol::handler::Shared;

pub(super) fn run(weak: Weak<Shared>) {
    loop {
        {
            let Some(shared) = weak.upgrade() else { return };
            let Some(cluster) = shared.cluster.as_ref() else { return };
            beat(cluster);
        }
        std::thread::sleep(HEARTBEAT);
    }
}

fn beat(c: &Cluster) {
    let node_key = format!("{}node:{}", c.prefix, c.node);
    let nodes = format!("{}nodes", c.prefix);
    let alive = c.call_anyway(|conn| {
        redis::pipe()
            .cmd("SET")
            .arg(&node_key)
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(&nodes)
            .arg(&c.node)
            .ignore()
            .query::<()>(conn)
    });
    if alive.is_err() {
        return;
    }
    if !c.up.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::info!("redis answers again");
    }
    let dead: Vec<String> = match c.call_anyway(|conn| c.scripts.reap.key(&nodes).arg(&c.prefix).invoke(conn))
    {
        Ok(dead) => dead,
        Err(_) => return,
    };
    if dead.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for member in dead.chunks(3) {
        let [room, client_id, user] = member else { continue };
        let user = (!user.is_empty()).then_some(user.as_str());
        let event = presence_event("presence:leave", room, client_id, user);
        pipe.cmd("PUBLISH").arg(c.channel(room)).arg(format!("e - -\n{event}")).ignore();
    }
    log::info!("redis: reaped {} members of dead nodes", dead.len() / 3);
    let _ = c.call_anyway(|conn| pipe.query::<()>(conn));
}
