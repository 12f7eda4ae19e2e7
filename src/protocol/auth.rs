//! Token auth at the upgrade (docs/protocol.md, "Identity and
//! authorization"): where a client's token is found, how it is verified
//! (by `jsonwebtoken`; no signature code here), and what it grants: a user
//! (`sub`), the rooms it may use (`rooms`, or its rights room by room in
//! `caps`, read by `caps.rs`), and when the session ends (`exp`).
//!
//! A token is never logged: errors say why a token failed, never what it was.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub(crate) use super::caps::Rights;
use super::caps::{Caps, Right, RoomPatterns};
use crate::types::RequestInfo;

/// The prefix of a token sent as a `Sec-WebSocket-Protocol` entry; that entry
/// is never echoed back as the chosen subprotocol.
pub(crate) const BEARER_SUBPROTOCOL: &str = "bearer.";

/// Clock skew tolerated on `nbf`. `exp` is not stretched: the
/// session ends at `exp`, so a token past it is refused rather than opened
/// and closed at once.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `sub`: the connection's user.
    pub user: String,
    /// `rooms`: the rooms it may join, publish to and read presence of.
    pub rooms: Option<RoomPatterns>,
    /// `caps`: its rights room by room; when present, `rooms` is not read.
    pub caps: Option<Caps>,
    /// `exp`, seconds since the Unix epoch: the session ends then. `None`
    /// for a user the connect proxy admitted: its session has no end.
    pub exp: Option<u64>,
}

impl Identity {
    /// Whether the token lets the connection join `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.rights(room).has(Right::Join)
    }

    /// Its rights in `room`: the `caps` claim's; else all of them where a
    /// `rooms` claim names the room (none where it does not); all without either.
    pub fn rights(&self, room: &str) -> Rights {
        match (&self.caps, &self.rooms) {
            (Some(caps), _) => caps.rights(room),
            (None, Some(rooms)) if !rooms.matches(room) => Rights::NONE,
            (None, _) => Rights::ALL,
        }
    }

    /// Whether its token names rooms at all (`rooms` or `caps`): only then
    /// may it read the presence of a room it is not in.
    pub fn names_rooms(&self) -> bool {
        self.caps.is_some() || self.rooms.is_some()
    }

    /// When the session ends, if it does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.exp.map(|exp| UNIX_EPOCH + Duration::from_secs(exp))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Absent: every room. Present, it must be an array of strings (`null`
    /// included is refused, not read as absent).
    #[serde(default, deserialize_with = "present")]
    rooms: Option<Vec<String>>,
    /// Absent: `rooms` decides. Present, it must be a list of `{rooms, allow}`.
    #[serde(default, deserialize_with = "present")]
    caps: Option<Caps>,
    /// Whether the token names an audience at all (any value, `null` too).
    #[serde(default, deserialize_with = "present")]
    aud: Option<serde::de::IgnoredAny>,
}

/// A claim that is present, whatever its value: `Some` (serde's `Option`
/// would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The one algorithm a public key verifies, from its type: RSA, or an EC key
/// on P-256 or P-384, given as a public key or a certificate (as jsonwebtoken
/// reads both). Any other key is refused.
fn public_key(pem: &str) -> Result<(DecodingKey, Algorithm), String> {
    use rustls_pki_types::pem::PemObject;
    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((key, Algorithm::RS256));
    }
    // The curve's OID in the key's AlgorithmIdentifier (RFC 5480).
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let refused =
        || "the JWT public key is not an RSA, P-256 or P-384 public key (or certificate) in PEM".to_owned();
    // A certificate names one curve too: its subject key's (its signature
    // algorithm is a hash OID, not a curve's).
    let der: Vec<u8> = match rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
        Ok(spki) => spki.to_vec(),
        Err(_) => {
            rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| refused())?.to_vec()
        }
    };
    let names = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let algorithm = if names(P256) {
        Algorithm::ES256
    } else if names(P384) {
        Algorithm::ES384
    } else {
        return Err(refused());
    };
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| refused())?;
    Ok((key, algorithm))
}

/// Verifies tokens against one key: an HMAC secret (HS256/384/512) or a
/// public key (RS256, ES256 or ES384, from its PEM).
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Whether an audience is configured.
    audience: bool,
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
                let (key, algorithm) = public_key(pem)?;
                (key, vec![algorithm])
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        // Without a configured audience, a token naming one is refused in
        // `verify` (it was minted for another service).
        if let Some(aud) = audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier { key, validation, audience: audience.is_some() }))
    }

    /// Verifies `token`: signature, algorithm, `exp` (still ahead), `nbf`
    /// (within the leeway), `aud`, `iss`, and the claims' shapes.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, Rejected> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| Rejected(format!("{:?}", e.kind())))?;
        let claims = data.claims;
        if claims.aud.is_some() && !self.audience {
            return Err(Rejected("aud present, and no audience is configured".into()));
        }
        let since_epoch = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if claims.exp <= since_epoch {
            return Err(Rejected("expired".into()));
        }
        // The session's end must be a time this clock can hold, as a wall
        // time and as a deadline from now (with a day to spare: the deadline
        // is computed again, a moment later, when the session is armed).
        let ahead = Duration::from_secs(claims.exp - since_epoch).saturating_add(Duration::from_secs(86_400));
        if UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp)).is_none()
            || std::time::Instant::now().checked_add(ahead).is_none()
        {
            return Err(Rejected("exp is past what the clock can hold".into()));
        }
        if claims.sub.is_empty() {
            return Err(Rejected("empty sub".into()));
        }
        Ok(Identity {
            user: claims.sub,
            rooms: claims.rooms.map(RoomPatterns::new),
            caps: claims.caps,
            exp: Some(claims.exp),
        })
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
    fn caps_replace_the_rooms_claim() {
        let caps = serde_json::from_str(r#"[{"rooms":["b"],"allow":["join"]}]"#).unwrap();
        let rooms = Some(RoomPatterns::new(vec!["a".into()]));
        let both = Identity { user: "u".into(), rooms: rooms.clone(), caps: Some(caps), exp: Some(1) };
        assert!(!both.allows("a") && both.allows("b"));
        assert!(!both.rights("b").has(Right::Publish));
        let only_rooms = Identity { caps: None, rooms, ..both.clone() };
        assert_eq!((only_rooms.rights("a"), only_rooms.rights("b")), (Rights::ALL, Rights::NONE));
        let neither = Identity { rooms: None, caps: None, ..both };
        assert_eq!(neither.rights("any"), Rights::ALL);
    }

    #[test]
    fn secret_and_public_key_are_exclusive_and_checked() {
        assert!(Verifier::new(None, None, None, None).unwrap().is_none());
        assert!(Verifier::new(Some("s"), Some("pem"), None, None).is_err());
        assert!(Verifier::new(None, Some("not a key"), None, None).is_err());
        assert!(Verifier::new(Some(""), None, None, None).is_err());
    }
}
