//! The plain HTTP routes on the WebSocket port: health, metrics, the demo page
//! and the browser client, the event stream (`sse.rs`) and the backend API
//! (`api.rs`). Everything else is 404.

use std::sync::atomic::Ordering::SeqCst;

use super::handler::Shared;
use crate::prometheus::write_one;
use crate::server::ServerHandle;
use crate::types::{HttpResponse, RequestInfo};

const DEMO_PAGE: &str = include_str!("assets/index.html");
const CLIENT_JS: &str = include_str!("assets/client.js");

/// Answers one non-upgrade request.
pub(crate) fn route(shared: &Shared, server: &ServerHandle, request: &RequestInfo) -> HttpResponse {
    match request.path.as_str() {
        "/healthz" => {
            if server.is_draining() || shared.draining.load(SeqCst) {
                super::admission::draining_response()
            } else if let Err(why) = shared.broker.health() {
                HttpResponse::new(503, "text/plain; charset=utf-8", why)
            } else {
                HttpResponse::new(200, "text/plain; charset=utf-8", "ok\n")
            }
        }
        "/metrics" => {
            HttpResponse::new(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text(shared, server))
        }
        super::sse::PATH if !shared.config.sse => HttpResponse::not_found(),
        super::sse::PATH => super::sse::route(request),
        path if path.starts_with(super::api::PREFIX) => super::api::route(shared, server, request),
        "/" => HttpResponse::new(200, "text/html; charset=utf-8", DEMO_PAGE),
        "/client.js" => HttpResponse::new(200, "text/javascript; charset=utf-8", CLIENT_JS),
        path if path == server.config().path => {
            HttpResponse::new(426, "text/plain; charset=utf-8", "this path is a WebSocket endpoint\n")
                .with_header("Upgrade", "websocket")
        }
        _ => HttpResponse::not_found(),
    }
}

/// Which requests take a body (`Handler::on_body`), decided on the head:
/// a `POST` to the backend API carrying the right key. Another request to
/// the API without the key gets the API's refusal (404 with the API off,
/// 401 without the key); any other gets 413.
pub(crate) fn body_limit(
    shared: &Shared,
    server: &ServerHandle,
    request: &RequestInfo,
) -> Result<usize, HttpResponse> {
    if !request.path.starts_with(super::api::PREFIX) {
        return Err(HttpResponse::no_body_taken());
    }
    if !super::api::key_accepted(shared, request) {
        // Refused without looking at the body (and logged, as every call is).
        return Err(super::api::route(shared, server, request));
    }
    if request.method != "POST" {
        return Err(HttpResponse::no_body_taken());
    }
    Ok(server.config().max_message_size)
}

/// The Prometheus text of `/metrics`, also what `ServerHandle::metrics_text`
/// and `wshub_metrics_text` return: one source for all three.
pub(crate) fn metrics_text(shared: &Shared, server: &ServerHandle) -> String {
    let mut text = shared.metrics.render(server, shared.rooms.budget());
    text.push_str(&backend_metrics(shared));
    shared.broker.write_metrics(&mut text);
    if let Some(proxy) = &shared.proxy {
        proxy.write_metrics(&mut text);
    }
    text
}

/// The gauges of the event streams and the ban list.
fn backend_metrics(shared: &Shared) -> String {
    let streams = super::sse::streams(shared);
    let bans = shared.bans.len(std::time::SystemTime::now());
    let mut out = String::new();
    write_one(
        &mut out,
        "wshub_sse_streams",
        "gauge",
        "Open Server-Sent Events streams (also counted in wshub_connections).",
        streams,
    );
    write_one(&mut out, "wshub_bans", "gauge", "Users banned now (at most max_bans).", bans);
    out
}
