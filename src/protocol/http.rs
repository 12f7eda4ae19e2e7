//! The plain HTTP routes on the WebSocket port: health, metrics, the demo page
//! and the browser client. Everything else is 404.

use std::sync::atomic::Ordering::SeqCst;

use super::handler::Shared;
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
            } else if shared.cluster.as_ref().is_some_and(|c| !c.is_up()) {
                HttpResponse::new(503, "text/plain; charset=utf-8", "redis unavailable\n")
            } else {
                HttpResponse::new(200, "text/plain; charset=utf-8", "ok\n")
            }
        }
        "/metrics" => HttpResponse::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(server, shared.rooms.budget())
                + &shared.cluster.as_ref().map(|c| c.render_metrics()).unwrap_or_default(),
        ),
        "/" => HttpResponse::new(200, "text/html; charset=utf-8", DEMO_PAGE),
        "/client.js" => HttpResponse::new(200, "text/javascript; charset=utf-8", CLIENT_JS),
        path if path == server.config().path => {
            HttpResponse::new(426, "text/plain; charset=utf-8", "this path is a WebSocket endpoint\n")
                .with_header("Upgrade", "websocket")
        }
        _ => HttpResponse::not_found(),
    }
}
