//! Thousands of joins of distinct rooms at once on one node, with Redis a
//! millisecond away: the subscriber subscribes many channels per command, so
//! every join is acked (one SUBSCRIBE round trip per room used to leave
//! joins waiting past their bound, answered `unavailable`).

mod cluster_common;
use cluster_common::*;

use std::time::Duration;

use serde_json::json;

#[test]
fn three_thousand_joins_of_three_thousand_rooms_are_all_acked() {
    const CLIENTS: usize = 3000;
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::from_millis(1));
    let a = node_at(&proxy.url(), &[]);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| a.client()).collect();
    let ids: Vec<String> = clients
        .iter_mut()
        .enumerate()
        .map(|(i, c)| c.send_request("room:join", json!({"room": format!("m{i}")})))
        .collect();
    let mut refused = Vec::new();
    for (c, id) in clients.iter_mut().zip(&ids) {
        let reply = until(c, 50, |v| v["id"] == id.as_str());
        if reply["type"] != "ack" {
            refused.push(reply);
        }
    }
    assert!(refused.is_empty(), "{} of {CLIENTS} joins refused, e.g. {}", refused.len(), refused[0]);
    assert_eq!(protocol_common::metric(a.addr, "wshub_redis_subscribed_rooms"), CLIENTS as u64);
}
