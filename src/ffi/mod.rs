//! The C ABI: calls coming in from C. With `sys/` (calls going out to the
//! OS), the only place `unsafe` is allowed; the engine never goes through here.
//!
//! - One file per opaque handle (the model is rustls-ffi):
//!   [`config`] (`wshub_config`), [`server`] (`wshub_server`: start, stop,
//!   connections and rooms), [`callbacks`] (`wshub_callbacks`, what C plugs in),
//!   [`request`] (`wshub_request`, what `on_upgrade` sees), [`event`]
//!   (`wshub_event`, pull mode), [`namespace`] (`wshub_namespace_options`), [`publish`] and [`moderation`] (the
//!   backend's calls into the protocol: publish, disconnect, ban). [`handler`] is the engine's `Handler` that
//!   calls them. Shared plumbing: [`panic`] (the boundary and
//!   argument macros every exported function goes through) and [`error`]
//!   (`wshub_result`, the stable error codes).
//!
//! `include/wshub.h` is generated from these files by cbindgen (see `build.rs`);
//! the doc comments below are what C readers see.
#![allow(non_camel_case_types)]
#![allow(unsafe_code)]

#[macro_use]
pub(crate) mod panic;
pub(crate) mod callbacks;
pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod handler;
pub(crate) mod log;
pub(crate) mod moderation;
pub(crate) mod namespace;
pub(crate) mod publish;
pub(crate) mod request;
pub(crate) mod server;
// Embedding in a host: adopting sockets, counters.
pub(crate) mod adopt;
pub(crate) mod stats;
