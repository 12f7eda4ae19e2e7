//! `presence:get` of a room the client is not in, allowed by its token's
//! `rooms` claim, asks the application's join hook as a `room:join` and a
//! stream do: a room the hook refuses to a user shows that user its members
//! no more than its messages. (Before, bob with `rooms: ["private:*"]`,
//! refused `private:payroll` by the hook over WebSocket and SSE, still got
//! its member list, admin included.)

mod admission_common;
mod protocol_common;

use std::time::{SystemTime, UNIX_EPOCH};

use admission_common::{ip, upgrade};
use protocol_common::Client;
use serde_json::{json, Value};
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, ServerHandle};

const SECRET: &str = "presence-hook-secret";

fn token(user: &str, rooms: Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = json!({"sub": user, "exp": exp, "rooms": rooms});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// Refuses rooms named `private:...` to everyone but `admin`, as auth_server.c does.
struct PrivateRooms;

impl Handler for PrivateRooms {
    fn on_join(&self, _: &ServerHandle, _: ConnId, user: Option<&str>, room: &str) -> bool {
        !room.starts_with("private:") || user == Some("admin")
    }
}

fn client(addr: std::net::SocketAddr, token: &str) -> Client {
    upgrade(ip("127.0.0.1"), addr, &format!("?access_token={token}"), &[], &["wshub.v1.json"]).open().0
}

#[test]
fn presence_of_a_room_the_join_hook_refuses_is_forbidden() {
    let handler = ProtocolHandler::with_app(ProtocolConfig::default().jwt_secret(SECRET), PrivateRooms);
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler).expect("start");
    let addr = server.local_addr();
    let mut admin = client(addr, &token("admin", json!(["private:*", "lobby"])));
    admin.join("private:payroll");
    admin.join("lobby");

    let mut bob = client(addr, &token("bob", json!(["private:*", "lobby"])));
    let refused = bob.request("room:join", json!({"room": "private:payroll"}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    let presence = bob.request("presence:get", json!({"room": "private:payroll"}));
    assert_eq!(presence["type"], "error", "the member list of a refused room: {presence}");
    assert_eq!(presence["payload"]["code"], "forbidden", "{presence}");

    // A room the hook allows: the claim is enough, as before.
    let lobby = bob.ok("presence:get", json!({"room": "lobby"}));
    assert_eq!(lobby["members"].as_array().map(Vec::len), Some(1), "{lobby}");
    // The admin, allowed, reads it without being a member of it either.
    admin.ok("room:leave", json!({"room": "private:payroll"}));
    admin.ok("presence:get", json!({"room": "private:payroll"}));
    drop((admin, bob));
    server.stop();
}
