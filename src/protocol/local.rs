//! [`LocalBroker`]: the [`Broker`] of a node that runs alone. Its rooms are
//! the room table (`room.rs`): seq, history and members under each room's
//! lock, the hub's fan-out, and the event streams' shadow rooms (`sse.rs`).
//! Nothing here waits on anything but a room's lock.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::bans::{self, BanError};
use super::broker::{Broker, Join, StreamOpen};
use super::envelope::{ack, ErrorCode, ErrorReply};
use super::handler::{ProtocolHandler, Shared};
use super::presence;
use super::publish::{missed, Publish, Published};
use super::reads::{Presence, PRESENCE_MAX};
use super::record::Record;
use super::sse;
use crate::server::ServerHandle;
use crate::sys::trim;
use crate::types::ConnId;

/// One node's rooms: the room table in [`Shared`], nothing else.
#[derive(Debug, Default)]
pub(crate) struct LocalBroker;

fn internal() -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "the server is stopping")
}

impl Broker for LocalBroker {
    fn start(&self, _: &Arc<Shared>, _: &ServerHandle) {}

    fn node(&self) -> String {
        format!("pid-{}", std::process::id())
    }

    fn client_id(&self, conn: ConnId) -> String {
        ProtocolHandler::client_id(conn)
    }

    fn health(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn write_metrics(&self, _: &mut String) {}

    fn begin_stop(&self) {}

    fn member_count(&self, shared: &Shared, room: &str) -> Result<usize, ErrorReply> {
        Ok(shared.rooms.with_room(room, false, |r| r.members.len()).unwrap_or(0))
    }

    /// Join, presence, replay and ack, all under the room's lock: a publish
    /// that takes the lock after it is broadcast after the ack, and one
    /// before it is in the history replayed, so nothing is lost or doubled.
    fn join(&self, shared: &Shared, server: &ServerHandle, j: &Join<'_>) -> Result<(u64, usize), ErrorReply> {
        let (room, conn) = (j.room, j.conn);
        let mut replayed = 0;
        let outcome = shared.rooms.with_room(room, true, |r| -> Result<u64, ErrorReply> {
            r.prune(Instant::now());
            if j.newly {
                r.rules.check_members(room, r.readers())?;
                server.join(conn, room).map_err(|_| internal())?;
                r.members.insert(conn, json!({}));
                if r.rules.announces_members() {
                    let event = presence::event("presence:join", room, j.client_id, j.user);
                    presence::announce(server, room, event, Some(conn));
                    presence::listen(server, conn, room, j.presence);
                }
            }
            // From here on the join has happened: a failed send means the
            // connection or the server is going away, and on_close cleans up.
            let mut payload =
                json!({"room": room, "seq": r.seq, "members": r.members.len(), "epoch": r.epoch});
            if let (Some(_), false) = (j.since, j.history) {
                payload["recovered"] = Value::Bool(false);
            } else if let Some(since) = j.since {
                let recovery = r.recover(since, j.epoch, j.max_replay, j.max_bytes);
                if recovery.cut_by_bytes {
                    shared.metrics.replay_bytes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                for frame in recovery.replay {
                    replayed += frame.len();
                    let _ = server.send_frame(conn, frame);
                }
                payload["recovered"] = Value::Bool(recovery.recovered);
            }
            if let Some(id) = j.id {
                let _ = server.send(conn, ack(id, payload));
            }
            Ok(r.published_bytes)
        });
        match outcome {
            Ok(Ok(published_bytes)) => Ok((published_bytes, replayed)),
            Ok(Err(e)) => Err(e),
            Err(miss) => Err(missed(shared, miss)),
        }
    }

    fn left(&self, _: &str, _: &str, _: ConnId, _: Option<&str>, _: bool) {}

    fn relay(&self, _: &str, _: ConnId, _: &str) -> Result<(), ErrorReply> {
        Ok(())
    }

    /// The next seq, the history entry and the fan-out to members and
    /// streams, under the room's lock.
    fn publish(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        p: &Publish<'_>,
        ts: u64,
    ) -> Result<Published, ErrorReply> {
        let outcome = shared.rooms.with_room(p.room, true, |r| {
            let now = Instant::now();
            if let Some(seq) = p.key.and_then(|key| {
                r.prune(now);
                r.keyed(key)
            }) {
                return Ok(Published { seq, duplicate: true });
            }
            let (seq, record) = r.publish(now, p.key, |seq| Record::encode(p.room, seq, ts, p.from, p.body));
            let sent = server.broadcast_frame(p.room, record.frame().clone(), p.except);
            sse::fan_out(server, r, p.room, &record, Some(p.from));
            sent.map(|()| Published { seq, duplicate: false })
        });
        trim::note_freed(shared.rooms.budget().take_freed());
        match outcome {
            Ok(Ok(published)) => Ok(published),
            Ok(Err(_)) => Err(internal()),
            Err(miss) => Err(missed(shared, miss)),
        }
    }

    fn presence(&self, shared: &Shared, room: &str) -> Result<Presence, ErrorReply> {
        let members = shared.rooms.with_room(room, false, |r| Presence {
            members: r
                .members
                .iter()
                .take(PRESENCE_MAX)
                .map(|(c, meta)| {
                    let mut m = json!({"clientId": ProtocolHandler::client_id(*c), "meta": meta});
                    if let Some(user) = shared.user_of(*c) {
                        m["user"] = Value::String(user.to_string());
                    }
                    m
                })
                .collect(),
            count: r.members.len(),
        });
        Ok(members.unwrap_or_default())
    }

    fn history(
        &self,
        shared: &Shared,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Option<String>, Vec<Record>), ErrorReply> {
        let found = shared.rooms.with_room(room, false, |r| {
            r.prune(Instant::now());
            let records = r.recover_records(since, None, usize::MAX, usize::MAX).replay;
            (r.epoch.clone(), records.into_iter().take(limit).collect::<Vec<_>>())
        });
        Ok(match found {
            Ok((epoch, frames)) => (Some(epoch), frames),
            Err(_) => (None, Vec::new()),
        })
    }

    /// Joins the room's shadow room, sends `connected` and replays what the
    /// client missed, all under the room's lock, so a message published
    /// meanwhile comes after them, exactly once.
    fn open_stream(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        s: StreamOpen<'_>,
    ) -> Result<(), ErrorReply> {
        let outcome = shared.rooms.with_room(s.room, true, |r| -> Result<(), ErrorReply> {
            r.prune(Instant::now());
            // Checked again where it counts: streams opening at once each passed `decide`.
            r.rules.check_members(s.room, r.readers())?;
            // Counted before the join can fail: `close` takes it back either way.
            // From here on a failed send means the stream or the server is going
            // away, and `close` cleans up.
            r.sse_streams += 1;
            if server.join_stream(s.conn, &sse::shadow(s.room)).is_err() {
                return Ok(());
            }
            let mut connected = s.connected.clone();
            connected["seq"] = json!(r.seq);
            connected["epoch"] = json!(r.epoch);
            let replay = s.since.filter(|_| s.history).map(|since| {
                r.recover_events(since, s.epoch, s.max_replay, s.max_bytes, |m| m.sse_event(s.room, None))
            });
            if let Some(recovery) = &replay {
                connected["recovered"] = Value::Bool(recovery.recovered);
            } else if s.since.is_some() {
                connected["recovered"] = Value::Bool(false);
            }
            let _ = server.send_frame(
                s.conn,
                crate::frame::shared(sse::event(None, "connected", &connected.to_string())),
            );
            for event in replay.map(|r| r.replay).unwrap_or_default() {
                let _ = server.send_frame(s.conn, event);
            }
            Ok(())
        });
        match outcome {
            Ok(result) => result,
            Err(miss) => Err(missed(shared, miss)),
        }
    }

    fn release(&self, _: &str) {}

    fn disconnect_client(&self, server: &ServerHandle, client_id: &str, code: u16, reason: &str) -> usize {
        bans::disconnect_client(server, client_id, code, reason)
    }

    fn kick_user(&self, _: &str, _: u16, _: &str) {}

    fn record_ban(&self, _: &Shared, _: &str, _: SystemTime, _: u64) -> Result<(), BanError> {
        Ok(())
    }

    fn forget_ban(&self, _: &str) {}

    fn tell_ban(&self, _: &str, _: u64) {}

    fn share_unban(&self, _: &str) {}
}
