//! Kick and ban (docs/protocol.md, "Backend HTTP API"): the ban list, checked
//! at every upgrade and event stream (403), and closing a client's or a
//! user's open connections (WebSocket and SSE alike).
//!
//! The list is bounded (`max_bans`): a ban past it is refused, never dropped
//! silently, and expired bans are pruned before that check. Callers (the
//! HTTP API, the Rust handle, the C API) check their own arguments' shapes;
//! this module owns what a ban means.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::handler::Shared;
use crate::server::ServerHandle;
use crate::types::ConnId;

/// The close code of a banned user's connections.
pub(crate) const BANNED_CLOSE_CODE: u16 = 4003;
/// The default close code of `disconnect`.
pub(crate) const DISCONNECT_CLOSE_CODE: u16 = 4000;
/// The longest ban, in seconds (ten years): keeps `until` representable.
pub(crate) const MAX_BAN_SECS: u64 = 10 * 365 * 24 * 3600;

/// Why a ban was not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BanError {
    /// The list holds `max_bans` unexpired bans.
    Full(usize),
}

impl std::fmt::Display for BanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanError::Full(max) => write!(f, "the ban list holds {max} users, the most it keeps"),
        }
    }
}

/// Banned users and when each ban ends (wall clock).
#[derive(Debug)]
pub(crate) struct Bans {
    max: usize,
    until: Mutex<HashMap<String, SystemTime>>,
}

impl Bans {
    pub fn new(max: usize) -> Self {
        Bans { max, until: Mutex::new(HashMap::new()) }
    }

    /// Bans `user` for `secs` seconds from now (a later ban replaces an
    /// earlier one); when it ends.
    pub fn ban(&self, user: &str, secs: u64, now: SystemTime) -> Result<SystemTime, BanError> {
        let until = now + Duration::from_secs(secs.min(MAX_BAN_SECS));
        let mut map = self.until.lock();
        if !map.contains_key(user) && map.len() >= self.max {
            map.retain(|_, end| *end > now);
            if map.len() >= self.max {
                return Err(BanError::Full(self.max));
            }
        }
        map.insert(user.to_owned(), until);
        Ok(until)
    }

    /// Whether [`Bans::ban`] of `user` at `now` would find room (expired
    /// bans are pruned to make it): its refusal if not.
    pub fn check_room(&self, user: &str, now: SystemTime) -> Result<(), BanError> {
        let mut map = self.until.lock();
        if map.contains_key(user) || map.len() < self.max {
            return Ok(());
        }
        map.retain(|_, end| *end > now);
        if map.len() < self.max {
            Ok(())
        } else {
            Err(BanError::Full(self.max))
        }
    }

    /// Lifts a ban; false when `user` was not banned (or it had expired).
    pub fn unban(&self, user: &str, now: SystemTime) -> bool {
        self.until.lock().remove(user).is_some_and(|end| end > now)
    }

    /// Whether `user` is banned at `now` (an expired ban is dropped here).
    pub fn is_banned(&self, user: &str, now: SystemTime) -> bool {
        let mut map = self.until.lock();
        match map.get(user) {
            Some(end) if *end > now => true,
            Some(_) => {
                map.remove(user);
                false
            }
            None => false,
        }
    }

    /// The users banned at `now`, and until when.
    pub fn held(&self, now: SystemTime) -> Vec<(String, SystemTime)> {
        self.until
            .lock()
            .iter()
            .filter(|(_, end)| **end > now)
            .map(|(user, end)| (user.clone(), *end))
            .collect()
    }

    /// Unexpired bans (the `wshub_bans` gauge).
    pub fn len(&self, now: SystemTime) -> usize {
        let mut map = self.until.lock();
        map.retain(|_, end| *end > now);
        map.len()
    }
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The open connections (WebSocket and SSE) of `user`.
pub(crate) fn connections_of(shared: &Shared, user: &str) -> Vec<ConnId> {
    shared.connections_of_user(user)
}

/// Closes `conn` as banned when `user` is banned now; whether it did. Called
/// once a connection's user is registered (so a ban made during its upgrade,
/// after the upgrade's own check, still reaches it: the ban is recorded
/// before its connections are looked up, the user registered before this
/// check) and on `auth:refresh`.
pub(crate) fn close_if_banned(shared: &Shared, server: &ServerHandle, conn: ConnId, user: &str) -> bool {
    if !shared.bans.is_banned(user, SystemTime::now()) {
        return false;
    }
    let _ = server.close(conn, BANNED_CLOSE_CODE, BANNED_REASON);
    true
}

/// The close reason of a banned user's connections.
pub(crate) const BANNED_REASON: &str = "banned";

/// Closes every open connection of `user` with `code` and `reason`; how many.
pub(crate) fn disconnect_user(
    shared: &Shared,
    server: &ServerHandle,
    user: &str,
    code: u16,
    reason: &str,
) -> usize {
    connections_of(shared, user).into_iter().filter(|c| server.close(*c, code, reason).is_ok()).count()
}

/// Closes one connection by its clientId; 0 or 1.
pub(crate) fn disconnect_client(server: &ServerHandle, client_id: &str, code: u16, reason: &str) -> usize {
    // A clientId is its connection id in decimal (ProtocolHandler::client_id).
    match client_id.parse::<ConnId>() {
        Ok(conn) if conn.to_string() == client_id => usize::from(server.close(conn, code, reason).is_ok()),
        _ => 0,
    }
}

/// Bans `user` here until `until_ms` (Unix ms), as another node did
/// (`cluster/`): an expired or unrepresentable time bans nobody; a full list
/// logs and keeps what it holds.
pub(crate) fn ban_until(shared: &Shared, user: &str, until_ms: u64) {
    let now = SystemTime::now();
    let now_ms = unix_ms(now);
    if until_ms <= now_ms || user.is_empty() {
        return;
    }
    let secs = (until_ms - now_ms).div_ceil(1000).min(MAX_BAN_SECS);
    if let Err(e) = shared.bans.ban(user, secs, now) {
        log::warn!("a ban of {user:?} from another node: {e}");
    }
}

/// Closes one connection by a clientId as `/api/disconnect` takes it: with
/// Redis a node-prefixed id (`<node>-<conn>`) of this node closes here, one
/// of another node is published for that node to close (counted there, not
/// here: 0); without, see [`disconnect_client`].
pub(crate) fn disconnect_client_id(
    shared: &Shared,
    server: &ServerHandle,
    client_id: &str,
    code: u16,
    reason: &str,
) -> usize {
    shared.broker.disconnect_client(server, client_id, code, reason)
}

/// [`disconnect_user`], and with Redis on every other node too (their
/// connections are counted there, not here).
pub(crate) fn disconnect_user_everywhere(
    shared: &Shared,
    server: &ServerHandle,
    user: &str,
    code: u16,
    reason: &str,
) -> usize {
    shared.broker.kick_user(user, code, reason);
    disconnect_user(shared, server, user, code, reason)
}

/// Bans `user` for `secs` here, closes their connections here, and with
/// Redis records the ban there and tells every other node (which close
/// theirs): what `/api/ban`, [`ProtocolHandler::ban`] and `wshub_ban` do.
/// Returns when it ends.
///
/// [`ProtocolHandler::ban`]: super::ProtocolHandler::ban
pub(crate) fn ban_everywhere(
    shared: &Shared,
    server: &ServerHandle,
    user: &str,
    secs: u64,
) -> Result<SystemTime, BanError> {
    let now = SystemTime::now();
    let until_ms = unix_ms(now + Duration::from_secs(secs.min(MAX_BAN_SECS)));
    // Recorded in Redis before it is made here: a node reading the recorded
    // bans lifts those of its own that Redis does not hold.
    shared.broker.record_ban(shared, user, now, until_ms)?;
    let until = match shared.bans.ban(user, secs, now) {
        Ok(until) => until,
        Err(e) => {
            shared.broker.forget_ban(user); // not made here: not recorded either
            return Err(e);
        }
    };
    disconnect_user(shared, server, user, BANNED_CLOSE_CODE, BANNED_REASON);
    shared.broker.tell_ban(user, until_ms);
    Ok(until)
}

/// Lifts `user`'s ban here and, with Redis, there and on every other node;
/// whether this node had it banned.
pub(crate) fn unban_everywhere(shared: &Shared, user: &str) -> bool {
    let was = shared.bans.unban(user, SystemTime::now());
    shared.broker.share_unban(user);
    was
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire_and_the_list_is_bounded() {
        let bans = Bans::new(2);
        let t0 = SystemTime::now();
        bans.ban("a", 10, t0).unwrap();
        bans.ban("b", 1, t0).unwrap();
        assert!(bans.is_banned("a", t0) && bans.is_banned("b", t0));
        assert_eq!(bans.ban("c", 10, t0), Err(BanError::Full(2)));
        bans.ban("a", 20, t0).unwrap(); // a renewal is not a new entry
        let t2 = t0 + Duration::from_secs(2);
        assert!(!bans.is_banned("b", t2), "expired");
        bans.ban("c", 10, t2).unwrap(); // the expired one made room
        assert_eq!(bans.len(t2), 2);
        assert!(bans.unban("c", t2));
        assert!(!bans.unban("c", t2));
        assert!(!bans.is_banned("nobody", t2));
    }
}
