//! The Redis [`Broker`]: the protocol's calls, each onto [`Cluster`]'s own
//! (this node's room table is its copy of what Redis holds; the subscriber
//! keeps it current).

use std::sync::Arc;
use std::time::SystemTime;

use super::Cluster;
use crate::protocol::bans::{self, BanError};
use crate::protocol::broker::{Broker, Join, StreamOpen};
use crate::protocol::envelope::ErrorReply;
use crate::protocol::handler::Shared;
use crate::protocol::publish::{Publish, Published};
use crate::protocol::reads::Presence;
use crate::protocol::record::Record;
use crate::server::ServerHandle;
use crate::types::ConnId;

// Each call names `Cluster::` itself: `self.join(..)` on an `Arc<Cluster>`
// would be this trait's method again.
impl Broker for Arc<Cluster> {
    fn start(&self, shared: &Arc<Shared>, server: &ServerHandle) {
        Cluster::start(self, shared, server);
    }

    fn node(&self) -> String {
        self.node.clone()
    }

    fn client_id(&self, conn: ConnId) -> String {
        Cluster::client_id(self, conn)
    }

    fn health(&self) -> Result<(), &'static str> {
        Cluster::health(self)
    }

    fn write_metrics(&self, text: &mut String) {
        text.push_str(&Cluster::render_metrics(self));
    }

    fn begin_stop(&self) {
        Cluster::begin_stop(self);
    }

    /// The members on every node (the room's Redis presence).
    fn member_count(&self, _: &Shared, room: &str) -> Result<usize, ErrorReply> {
        Cluster::member_count(self, room)
    }

    /// `max_members` across nodes is checked against Redis's count before
    /// the join (and again in the room's turn among this node's joins, as
    /// it takes the seat).
    fn join(&self, shared: &Shared, server: &ServerHandle, j: &Join<'_>) -> Result<(u64, usize), ErrorReply> {
        if j.newly {
            shared.check_seat(j.room)?;
        }
        Cluster::join(self, shared, server, j)
    }

    fn left(&self, room: &str, client_id: &str, conn: ConnId, user: Option<&str>, last: bool) {
        Cluster::left(self, room, client_id, conn, user, last);
    }

    fn relay(&self, room: &str, conn: ConnId, text: &str) -> Result<(), ErrorReply> {
        Cluster::relay(self, room, conn, text)
    }

    /// One script call; the subscriber delivers. The epoch and seq this node
    /// delivered last go with it: a Redis behind them moves the room to a
    /// new epoch.
    fn publish(
        &self,
        shared: &Shared,
        _: &ServerHandle,
        p: &Publish<'_>,
        ts: u64,
    ) -> Result<Published, ErrorReply> {
        let seen =
            shared.rooms.with_room(p.room, false, |r| r.cluster_synced.then(|| (r.epoch.clone(), r.seq)));
        let history = shared.rules(p.room).history;
        Cluster::publish(self, p, ts, seen.ok().flatten(), &history)
    }

    fn presence(&self, _: &Shared, room: &str) -> Result<Presence, ErrorReply> {
        Cluster::presence(self, room)
    }

    fn history(
        &self,
        shared: &Shared,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Option<String>, Vec<Record>), ErrorReply> {
        let (epoch, frames) = Cluster::history(self, room, since, limit, &shared.rules(room).history)?;
        Ok((Some(epoch), frames))
    }

    fn open_stream(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        s: StreamOpen<'_>,
    ) -> Result<(), ErrorReply> {
        Cluster::open_stream(
            self,
            shared,
            server,
            s.conn,
            s.room,
            s.since,
            s.history,
            s.epoch,
            s.max_replay,
            s.max_bytes,
            s.connected,
        )
    }

    fn release(&self, room: &str) {
        Cluster::release(self, room);
    }

    /// A node-prefixed id (`<node>-<conn>`) of this node closes here; one of
    /// another node is published for that node to close (counted there, not
    /// here: 0); any other is taken as a single node's.
    fn disconnect_client(&self, server: &ServerHandle, client_id: &str, code: u16, reason: &str) -> usize {
        match self.owner_of(client_id) {
            Some(Ok(conn)) => usize::from(server.close(conn, code, reason).is_ok()),
            Some(Err(())) => {
                self.kick_client(client_id, code, reason);
                0
            }
            None => bans::disconnect_client(server, client_id, code, reason),
        }
    }

    fn kick_user(&self, user: &str, code: u16, reason: &str) {
        Cluster::kick_user(self, user, code, reason);
    }

    /// A ban this node refuses is not recorded: it would replace, then take
    /// back, what Redis holds for the user (another node's ban). Checked at
    /// the instant `Bans::ban` then bans at, as before the broker seam.
    fn record_ban(
        &self,
        shared: &Shared,
        user: &str,
        now: SystemTime,
        until_ms: u64,
    ) -> Result<(), BanError> {
        shared.bans.check_room(user, now)?;
        Cluster::record_ban(self, user, until_ms);
        Ok(())
    }

    fn forget_ban(&self, user: &str) {
        Cluster::forget_ban(self, user);
    }

    fn tell_ban(&self, user: &str, until_ms: u64) {
        Cluster::tell_ban(self, user, until_ms);
    }

    fn share_unban(&self, user: &str) {
        Cluster::share_unban(self, user);
    }
}
