//! Who may open a WebSocket: the checks made on the upgrade request, before
//! the 101 (docs/protocol.md, "Handshake rules"), never after: the drain
//! announcement (503), the Origin allow-list (403), the token (401, see
//! `auth`) and the per-user cap (503 with `Retry-After`). Per-IP caps and the
//! handshake deadline are the engine's (`ip_table`, `connection::handshake`).
//!
//! What a verified token grants is held here from the upgrade until
//! `on_connect` takes it ([`Admission::take`]); none of these checks touch a
//! connection's state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::auth::{self, Identity, Verifier};
use super::config::ProtocolConfig;
use super::origin::Origin;
use super::proxy::Proxy;
use crate::types::{ConnId, HttpResponse, RequestInfo};
use std::sync::Arc;

/// How long an admitted upgrade may wait for its `on_connect` before its
/// per-user reservation is given back (its 101 could not be sent).
const PENDING_TTL: Duration = Duration::from_secs(60);

/// The upgrade checks of one protocol handler, and what they hand to `on_connect`.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `Err` when the configured key is unusable: every upgrade is refused.
    verifier: Result<Option<Verifier>, String>,
    origins: Vec<String>,
    max_per_user: usize,
    users: Mutex<Users>,
    /// With `--proxy-connect`, the backend admits instead of a token.
    proxy: Option<Arc<Proxy>>,
}

#[derive(Debug, Default)]
struct Users {
    /// Connections per user: open, or admitted and not yet connected.
    count: HashMap<String, usize>,
    /// Admitted upgrades waiting for `on_connect`.
    pending: HashMap<ConnId, (Identity, Instant)>,
}

impl Users {
    fn release(&mut self, user: &str) {
        if let Some(n) = self.count.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(user);
            }
        }
    }
}

impl Admission {
    pub fn new(config: &ProtocolConfig, proxy: Option<Arc<Proxy>>) -> Self {
        let proxy = proxy.filter(|p| p.decides_connect());
        let verifier = Verifier::new(
            config.jwt_secret.as_ref().map(|s| s.0.as_str()),
            config.jwt_public_key_pem.as_deref(),
            config.jwt_audience.as_deref(),
            config.jwt_issuer.as_deref(),
        );
        if let Err(e) = &verifier {
            log::error!("token auth: {e}; every upgrade will be refused with 401");
        }
        Admission {
            verifier,
            origins: config
                .allow_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            max_per_user: config.max_connections_per_user,
            users: Mutex::default(),
            proxy,
        }
    }

    /// Whether connections can have a user: token auth or the connect proxy is on.
    pub fn has_tokens(&self) -> bool {
        matches!(self.verifier, Ok(Some(_))) || self.proxy.is_some()
    }

    /// Verifies a token sent later (`auth:refresh`).
    pub fn verify(&self, token: &str) -> Option<Identity> {
        match &self.verifier {
            Ok(Some(v)) => v.verify(token, SystemTime::now()).ok(),
            _ => None,
        }
    }

    /// Decides whether `request` may upgrade. On success the request as the
    /// application sees it (with `user` set when a token was verified).
    pub fn admit(
        &self,
        draining: &AtomicBool,
        conn: ConnId,
        request: &RequestInfo,
    ) -> Result<RequestInfo, HttpResponse> {
        if draining.load(SeqCst) {
            return Err(draining_response());
        }
        if !self.origin_allowed(request.header("origin")) {
            return Err(refusal(403, "origin not allowed\n"));
        }
        let from_backend = self.proxy.as_ref().and_then(|p| p.connect(request));
        let identity = match (from_backend, &self.verifier) {
            (Some(Ok((user, caps))), _) => Some(Identity { user, rooms: None, caps, exp: None }),
            (Some(Err(status)), _) => return Err(refusal(status, "the backend refused this connection\n")),
            (None, verifier) => self.verify_request(verifier, request)?,
        };
        self.reserve(conn, request, identity)
    }

    /// The identity of `request`'s token, when tokens are on.
    fn verify_request(
        &self,
        verifier: &Result<Option<Verifier>, String>,
        request: &RequestInfo,
    ) -> Result<Option<Identity>, HttpResponse> {
        Ok(match verifier {
            Ok(None) => None,
            Err(_) => return Err(unauthorized()),
            Ok(Some(verifier)) => {
                let Some(token) = auth::token_of(request) else { return Err(unauthorized()) };
                match verifier.verify(&token, SystemTime::now()) {
                    Ok(identity) => Some(identity),
                    Err(why) => {
                        // The reason only: never the token.
                        log::debug!("{}: token refused: {}", request.remote_addr, why.0);
                        return Err(unauthorized());
                    }
                }
            }
        })
    }

    /// Holds `identity` for `conn` until its `on_connect`, within the
    /// per-user cap; the request as the application sees it.
    fn reserve(
        &self,
        conn: ConnId,
        request: &RequestInfo,
        identity: Option<Identity>,
    ) -> Result<RequestInfo, HttpResponse> {
        let mut admitted = request.clone();
        if let Some(identity) = identity {
            let now = Instant::now();
            let mut users = self.users.lock();
            let stale: Vec<ConnId> = users
                .pending
                .iter()
                .filter(|(_, (_, at))| now.duration_since(*at) > PENDING_TTL)
                .map(|(c, _)| *c)
                .collect();
            for c in stale {
                if let Some((old, _)) = users.pending.remove(&c) {
                    users.release(&old.user);
                }
            }
            let count = users.count.get(&identity.user).copied().unwrap_or(0);
            if self.max_per_user > 0 && count >= self.max_per_user {
                return Err(
                    refusal(503, "too many connections for this user\n").with_header("Retry-After", "5")
                );
            }
            *users.count.entry(identity.user.clone()).or_default() += 1;
            admitted.user = Some(identity.user.clone());
            users.pending.insert(conn, (identity, now));
        }
        Ok(admitted)
    }

    /// The identity admitted for `conn`, still waiting for its `on_connect`
    /// (a copy; [`take`](Self::take) removes it).
    pub fn pending(&self, conn: ConnId) -> Option<Identity> {
        self.users.lock().pending.get(&conn).map(|(identity, _)| identity.clone())
    }

    /// The identity admitted for `conn`, for its `on_connect`.
    pub fn take(&self, conn: ConnId) -> Option<Identity> {
        self.users.lock().pending.remove(&conn).map(|(identity, _)| identity)
    }

    /// An admitted upgrade was refused later (by the application): give back
    /// what it reserved.
    pub fn forget(&self, conn: ConnId) {
        let mut users = self.users.lock();
        if let Some((identity, _)) = users.pending.remove(&conn) {
            users.release(&identity.user);
        }
    }

    /// A connected user's connection closed.
    pub fn release(&self, user: &str) {
        self.users.lock().release(user);
    }

    /// Empty list: any origin. Otherwise a request without `Origin` (not a
    /// browser) passes, and a browser's must match an entry.
    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.origins.is_empty() {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else { return false };
        self.origins.iter().any(|pattern| origin.matches(pattern))
    }
}

fn refusal(status: u16, body: &str) -> HttpResponse {
    HttpResponse::new(status, "text/plain; charset=utf-8", body)
}

fn unauthorized() -> HttpResponse {
    refusal(401, "a valid token is required\n").with_header("WWW-Authenticate", "Bearer")
}

/// The answer while the server announces its stop: to upgrades and to `/healthz`.
pub(crate) fn draining_response() -> HttpResponse {
    HttpResponse::new(503, "text/plain; charset=utf-8", "draining\n").with_header("Retry-After", "5")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str], origin: &str) -> bool {
        let config = ProtocolConfig {
            allow_origins: list.iter().map(|s| s.to_string()).collect(),
            ..ProtocolConfig::default()
        };
        Admission::new(&config, None).origin_allowed(Some(origin))
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let list = ["https://app.example.com", "http://localhost:8080", "https://*.example.org"];
        assert!(allowed(&list, "https://app.example.com"));
        assert!(allowed(&list, "https://APP.example.com:443"));
        assert!(allowed(&list, "http://localhost:8080"));
        assert!(allowed(&list, "https://a.b.example.org"));
        assert!(!allowed(&list, "https://example.org"), "the bare domain is not a subdomain");
        assert!(!allowed(&list, "https://evilexample.org"));
        assert!(!allowed(&list, "http://app.example.com"), "scheme");
        assert!(!allowed(&list, "https://app.example.com:8443"), "port");
        assert!(!allowed(&list, "http://localhost:8081"));
        assert!(!allowed(&list, "null"));
        assert!(!allowed(&list, "https://app.example.com.evil.com"));
        assert!(allowed(&[], "https://anything.test"), "no list: any origin");
    }

    #[test]
    fn origins_are_read_as_browsers_serialize_them() {
        let list = ["https://app.example.com", "https://*.example.org", "http://[::1]:8080"];
        assert!(allowed(&list, "http://[::1]:8080"));
        assert!(allowed(&list, "https://a-b_c.example.org"));
        for bad in [
            "https://app.example.com:+443",
            "https://app.example.com:0443",
            "https://app.example.com:",
            "https://app.example.com:443:443",
            "https://app.example.com/",
            "https://evil\\.example.org",
            "https://evil\\@x.example.org",
            "https://ev il.example.org",
            "https://evil%2e.example.org",
            "https://app.example.com:99999",
            "http://[::1]x:8080",
            "http://[]:8080",
            "https://..example.org",
            "https://.x.example.org",
            "https://x..example.org",
            "https://app.example.com.",
            "https://",
        ] {
            assert!(!allowed(&list, bad), "{bad}");
        }
    }
}
