//! The echo handler behind `wshub --echo`: every text and binary message goes
//! back to its sender unchanged. It is the conformance target (Autobahn) and the
//! simplest example of a [`Handler`].

use crate::handler::Handler;
use crate::server::ServerHandle;
use crate::types::{ConnId, Message};

/// Echoes every message back to its sender.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoHandler;

impl Handler for EchoHandler {
    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        // The connection may be closing; then there is no one to echo to.
        let _ = server.send(conn, message);
    }
}
