//! wshub: a thread-per-connection WebSocket server with rooms, usable from Rust,
//! from C through `include/wshub.h`, and as the `wshub` binary.
//!
//! A message's path through the crate, by module: [`acceptor`] takes the TCP
//! connection; `connection::reader` upgrades it (`handshake`) and reads frames,
//! calling the [`Handler`]; [`ServerHandle`] turns a send, join or broadcast into
//! a command for the `hub` thread, which tracks [`rooms`] and writes frames
//! (`frame`) straight to each member's socket when nothing is queued for it,
//! else to its queue (`connection::outbound`); `connection::writer` writes
//! queued frames out.
//! [`protocol`] is wire protocol v1 (rooms with seq and recovery, presence, HTTP
//! routes) as one [`Handler`] on top of all that.
#![warn(missing_docs)]
// `unsafe` lives only in `sys/` (calls out to the OS) and `ffi/` (calls in
// from C), which allow it; every block there says why it is sound.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod acceptor;
pub mod client;
mod config;
mod config_file;
mod conn_map;
mod connection;
mod echo;
mod engine;
mod error;
mod ffi;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod hub;
mod ip_table;
mod logging;
mod overflow;
mod prometheus;
pub mod protocol;
mod server;
mod start;
mod stats;
mod sys;
/// systemd integration for the binary (and any Rust service): socket
/// activation and `sd_notify`.
pub mod systemd;
mod tls;
mod trusted_proxy;
mod types;

pub use config::Config;
pub use config_file::{ConfigFile, NamespaceBlock};
pub use echo::EchoHandler;
pub use error::{Error, Result};
pub use frame::is_sendable_close_code;
pub use handler::{Handler, Membership};
pub use hub::rooms;
pub use server::{ConnInfo, ServerHandle};
pub use start::Server;
pub use stats::StatsSnapshot;
pub use tls::PemSource;
pub use types::{ConnId, HttpResponse, Message, RequestInfo, Upgrade};

/// The README's Rust example, compiled and run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The Rust API chapter's example (`docs/rust-api.md`), compiled and run by `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../docs/rust-api.md")]
struct RustApiDoctests;
