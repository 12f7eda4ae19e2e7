//! An event stream asks the application's join hook as a `room:join` does:
//! after the application's `on_upgrade` accepted the connection, so a hook
//! that reads what `on_upgrade` attached to the connection (the C host's
//! `wshub_conn_identity`, a Rust application's own map) decides a stream as
//! it decides a join. A stream the hook refuses after `on_upgrade` accepted
//! it gets `403` and `on_upgrade_failed`, so the application can release what
//! it attached. (Before, a stream asked `on_join` before `on_upgrade`: the
//! hook saw a connection it knew nothing of and refused the admin.)

mod api_common;
mod protocol_common;

use std::collections::HashMap;
use std::sync::Arc;

use api_common::Sse;
use parking_lot::Mutex;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, RequestInfo, ServerHandle, Upgrade};

/// Auth off: `on_upgrade` takes the user from its own session check (here an
/// `X-User` header) and keeps it by connection; `on_join` lets only `admin`
/// into `private:` rooms, by what `on_upgrade` kept.
#[derive(Clone, Default)]
struct Sessions {
    users: Arc<Mutex<HashMap<ConnId, String>>>,
    failed: Arc<Mutex<Vec<ConnId>>>,
}

impl Handler for Sessions {
    fn on_upgrade(&self, _: &ServerHandle, conn: ConnId, request: &RequestInfo) -> Upgrade {
        match request.header("x-user") {
            Some(user) => {
                self.users.lock().insert(conn, user.to_owned());
                Upgrade::Accept { subprotocol: None }
            }
            None => Upgrade::reject(401),
        }
    }

    fn on_join(&self, _: &ServerHandle, conn: ConnId, _: Option<&str>, room: &str) -> bool {
        !room.starts_with("private:") || self.users.lock().get(&conn).map(String::as_str) == Some("admin")
    }

    fn on_upgrade_failed(&self, _: &ServerHandle, conn: ConnId) {
        self.users.lock().remove(&conn);
        self.failed.lock().push(conn);
    }

    fn on_close(&self, _: &ServerHandle, conn: ConnId, _: u16, _: &str) {
        self.users.lock().remove(&conn);
    }
}

#[test]
fn a_streams_join_hook_runs_after_on_upgrade_and_sees_what_it_attached() {
    let app = Sessions::default();
    let handler = ProtocolHandler::with_app(ProtocolConfig::default(), app.clone());
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler).expect("start");
    let addr = server.local_addr();

    let mut admin = Sse::open(addr, "room=private:payroll", &[("X-User", "admin")]);
    assert_eq!(admin.status, 200, "the hook knows the admin from on_upgrade: {}", admin.head);
    admin.expect("connected");

    let bob = Sse::open(addr, "room=private:payroll", &[("X-User", "bob")]);
    assert_eq!(bob.status, 403, "{}", bob.head);
    assert_eq!(app.failed.lock().len(), 1, "the refused stream's on_upgrade_failed came");
    assert_eq!(app.users.lock().len(), 1, "only the admin's stream is still attached");

    assert_eq!(Sse::open(addr, "room=private:payroll", &[]).status, 401, "on_upgrade still decides first");
    assert_eq!(app.failed.lock().len(), 1, "a refusal by on_upgrade itself is no failed upgrade");
    drop(admin);
    server.stop();
}
