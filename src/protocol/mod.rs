//! Wire protocol v1 (`docs/protocol.md`) as a
//! layer on top of the engine: a [`Handler`](crate::Handler) implementation,
//! not part of the engine.
//!
//! An upgrade passes `admission` first. A message's path: `rate_limit`
//! decides whether it is served (before it is parsed; a limited one gets
//! `error rate_limited` with the id peeked from it), [`envelope`] or
//! [`binary`] parses it, `handler` acts on it, `publish` is the one way a message enters a room, `room` keeps each room's
//! seq, history and presence, `record` is the one encoder of a stored message (frame, event, API entry, Redis form), `presence` who hears a room's presence events. Every operation whose answer
//! depends on where rooms live goes through `broker` (the seam): `local` keeps them on this
//! node, `cluster` spreads them over nodes through Redis (`--redis`); `http` and `metrics` answer the plain HTTP routes.
//! Backends come in through `api` (the HTTP API) or the handle's methods
//! (`publish`, `ban`, ...); `bans` owns kick and ban, `sse` the event streams,
//! `reads` what the API and streams read about rooms.

pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod auth;
mod backend;
pub(crate) mod bans;
pub mod binary;
mod broker;
mod caps;
mod cluster;
mod config;
pub mod envelope;
mod handler;
mod http;
mod local;
mod metrics;
mod namespace;
pub(crate) mod origin;
mod presence;
mod proxy;
mod publish;
mod rate_limit;
mod reads;
pub(crate) mod record;
mod room;
pub(crate) mod sse;

pub(crate) use cluster::sentinel::parse_addr as parse_sentinel_addr;
pub use config::{ProtocolConfig, Secret, BIG_REPLY};
pub use handler::{choose_subprotocol, ProtocolHandler, SUBPROTOCOLS};
pub use namespace::Namespace;
