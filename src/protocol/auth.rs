//! Token auth at the upgrade (docs/protocol.md, "Identity and
//! authorization"): where a client's token is found, how it is verified
//! (by `jsonwebtoken`; no signature code here), and what it grants: a user
//! (`sub`), the rooms it may use (`rooms`), and when the session ends (`exp`).
//!
//! A token is never logged: errors say why a token failed, never what it was.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::types::RequestInfo;

/// The prefix of a token sent as a `Sec-WebSocket-Protocol` entry; that entry
/// is never echoed back as the chosen subprotocol.
pub(crate) const BEARER_SUBPROTOCOL: &str = "bearer.";

/// Clock skew tolerated on `nbf` (and `iat`). `exp` is not stretched: the
/// session ends at `exp`, so a token past it is refused rather than opened
/// and closed at once.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `sub`: the connection's user.
    pub user: String,
    /// `rooms`: the rooms it may join, publish to and read presence of.
    pub rooms: Option<RoomsClaim>,
    /// `exp`, seconds since the Unix epoch: the session ends then.
    pub exp: u64,
}

impl Identity {
    /// Whether the token lets the connection use `room` (no claim: every room).
    pub fn allows(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.allows(room))
    }

    /// When the session ends.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// A `rooms` claim: exact names, and prefixes written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomsClaim(Vec<String>);

impl RoomsClaim {
    /// Whether the claim names `room` or a prefix of it (`chat:*` allows `chat:1`).
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => p == room,
        })
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

/// Verifies tokens against one key: an HMAC secret (HS256/384/512) or a
/// public key (RS256 or ES256, from its PEM).
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// Why a token was refused (for the log; never the token itself).
#[derive(Debug)]
pub(crate) struct Rejected(pub String);

impl Verifier {
    /// A verifier for the settings, or `None` when auth is off.
    pub fn new(
        secret: Option<&str>,
        public_key_pem: Option<&str>,
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Option<Verifier>, String> {
        let (key, algorithms) = match (secret, public_key_pem) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err("set a JWT secret or a JWT public key, not both".into()),
            (Some(""), None) => return Err("the JWT secret is empty".into()),
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ),
            (None, Some(pem)) => {
                // The key's type decides the one algorithm it verifies, so a
                // token cannot pick another (e.g. HS256 keyed with the public key).
                if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    (key, vec![Algorithm::RS256])
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                    (key, vec![Algorithm::ES256])
                } else {
                    return Err("the JWT public key is not an RSA or EC (P-256) public key in PEM".into());
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier { key, validation }))
    }

    /// Verifies `token`: signature, algorithm, `exp` (still ahead), `nbf`
    /// (within the leeway), `aud`, `iss`, and the claims' shapes.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, Rejected> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| Rejected(format!("{:?}", e.kind())))?;
        let claims = data.claims;
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if claims.exp <= now {
            return Err(Rejected("expired".into()));
        }
        if claims.sub.is_empty() {
            return Err(Rejected("empty sub".into()));
        }
        Ok(Identity { user: claims.sub, rooms: claims.rooms.map(RoomsClaim), exp: claims.exp })
    }
}

/// The token a request carries, from (first found) `Authorization: Bearer`,
/// the `access_token` query parameter, or a `bearer.<token>` subprotocol entry.
pub(crate) fn token_of(request: &RequestInfo) -> Option<String> {
    if let Some(value) = request.header("authorization") {
        let value = value.trim();
        if value.len() > 7 && value.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
            return Some(value[7..].trim().to_owned());
        }
    }
    if let Some(token) = request.query_param("access_token") {
        return Some(token);
    }
    request.subprotocols().into_iter().find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], query: &str) -> RequestInfo {
        RequestInfo {
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            method: "GET".into(),
            path: "/ws".into(),
            query: query.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            received_at: SystemTime::now(),
            user: None,
            tls_client_subject: None,
            body: Vec::new(),
        }
    }

    #[test]
    fn the_three_places_a_token_comes_from() {
        assert_eq!(token_of(&request(&[("Authorization", "Bearer abc")], "")).as_deref(), Some("abc"));
        assert_eq!(token_of(&request(&[("authorization", "bearer  x.y.z ")], "")).as_deref(), Some("x.y.z"));
        assert_eq!(token_of(&request(&[], "a=1&access_token=q%2Er")).as_deref(), Some("q.r"));
        let offered = [("Sec-WebSocket-Protocol", "wshub.v1.json, bearer.t.o.k")];
        assert_eq!(token_of(&request(&offered, "")).as_deref(), Some("t.o.k"));
        assert_eq!(token_of(&request(&[("Authorization", "Basic abc")], "")), None);
        assert_eq!(token_of(&request(&[("Authorization", "Bearer")], "")), None);
    }

    #[test]
    fn rooms_claims_match_names_and_prefixes() {
        let claim = RoomsClaim(vec!["lobby".into(), "chat:*".into()]);
        assert!(claim.allows("lobby") && claim.allows("chat:1") && claim.allows("chat:"));
        assert!(!claim.allows("lobby2") && !claim.allows("chat") && !claim.allows("other"));
    }

    #[test]
    fn secret_and_public_key_are_exclusive_and_checked() {
        assert!(Verifier::new(None, None, None, None).unwrap().is_none());
        assert!(Verifier::new(Some("s"), Some("pem"), None, None).is_err());
        assert!(Verifier::new(None, Some("not a key"), None, None).is_err());
        assert!(Verifier::new(Some(""), None, None, None).is_err());
    }
}
