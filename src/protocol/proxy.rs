//! The backend proxy (docs/protocol.md, "Namespaces and rights"): the
//! application's backend decides over HTTP who connects (`--proxy-connect`,
//! before the 101), who joins a room and with which rights
//! (`--proxy-join`, on `room:join` and `/sse`) and what a client publishes
//! (`--proxy-publish`).
//!
//! Each call is a JSON POST through one `ureq` agent (connections kept
//! alive and reused), bounded by `proxy_timeout`, carrying `X-Wshub-Node`
//! and, with a key, `Authorization: apikey <key>`. It runs on the calling
//! connection's reader thread: a slow or dead backend delays that
//! connection only, never the acceptor or other connections. This module
//! owns the calls, what their answers mean and their counters; the call
//! sites in `admission.rs`, `handler.rs` and `sse.rs` only act on a [`Verdict`].
//! A stop interrupts the calls in flight ([`Proxy::shutdown`], from the
//! handler's `on_stop`), so none holds it up (but a connect in progress).

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::caps::{Caps, Right, Rights};
use super::config::{ProtocolConfig, Secret};
use super::envelope::{ErrorCode, ErrorReply, RawJson};
use crate::types::RequestInfo;

/// Largest answer body read from the backend; a longer one is a failure.
const MAX_ANSWER: u64 = 1 << 20;

/// Which proxy a call is for (a label on `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Join,
    Publish,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Connect, Kind::Join, Kind::Publish];

    fn label(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Join => "join",
            Kind::Publish => "publish",
        }
    }
}

/// The counters of one proxy kind.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    /// No answer in time, no connection, or a status the proxy does not know.
    failures: AtomicU64,
    /// Microseconds spent in every call together.
    micros: AtomicU64,
}

/// What the backend answered.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// `200`, with its JSON body (`Null` when empty).
    Allow(Value),
    /// `401` or `403`: the backend refused.
    Refuse(u16),
    /// Anything else, or no answer within the timeout.
    Failed,
}

/// The proxy URLs and the one HTTP agent they share.
pub(crate) struct Proxy {
    agent: ureq::Agent,
    /// Set by [`Proxy::shutdown`]: calls fail at once from then on.
    stopped: AtomicBool,
    connect: Option<String>,
    join: Option<String>,
    publish: Option<String>,
    key: Option<Secret>,
    node: String,
    counters: [Counters; 3],
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("connect", &self.connect)
            .field("join", &self.join)
            .field("publish", &self.publish)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// The proxy of these settings, or `None` when no proxy URL is set.
    /// `node` names this server in `X-Wshub-Node`.
    pub fn new(config: &ProtocolConfig, node: String) -> Option<Proxy> {
        if config.proxy_connect.is_none() && config.proxy_join.is_none() && config.proxy_publish.is_none() {
            return None;
        }
        let agent_config = ureq::Agent::config_builder()
            .timeout_global(Some(config.proxy_timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(64)
            // A redirect is an answer the proxy does not know (a failure),
            // never a request to another URL: a followed one would let
            // whatever host it names admit connections.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build();
        Some(Proxy {
            agent: ureq::Agent::new_with_config(agent_config),
            stopped: AtomicBool::new(false),
            connect: config.proxy_connect.clone(),
            join: config.proxy_join.clone(),
            publish: config.proxy_publish.clone(),
            key: config.proxy_key.clone(),
            node,
            counters: Default::default(),
        })
    }

    /// The server is stopping: every call in flight ends now (its socket
    /// is closed, so it fails like a backend that went away) and later calls
    /// fail at once. Connection threads waiting for the backend then go on,
    /// and their connections close with everyone else's. Not a TCP connect
    /// still in progress (ureq does not interrupt it): that one runs out
    /// `proxy_timeout`.
    pub fn shutdown(&self) {
        if !self.stopped.swap(true, Relaxed) {
            self.agent.clone().shutdown();
        }
    }

    pub fn decides_connect(&self) -> bool {
        self.connect.is_some()
    }

    /// One POST of `body` to `url`, counted under `kind`.
    fn call(&self, kind: Kind, url: &str, body: &Value) -> Verdict {
        let counters = &self.counters[kind as usize];
        counters.calls.fetch_add(1, Relaxed);
        let started = Instant::now();
        let verdict = self.post(url, body);
        counters.micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        if matches!(verdict, Verdict::Failed) {
            counters.failures.fetch_add(1, Relaxed);
        }
        verdict
    }

    fn post(&self, url: &str, body: &Value) -> Verdict {
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Wshub-Node", self.node.as_str());
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("apikey {}", key.0));
        }
        let mut response = match request.send(body.to_string().as_bytes()) {
            Ok(r) => r,
            Err(e) if self.stopped.load(Relaxed) => {
                log::debug!("proxy {url}: ended by the server's stop ({e})");
                return Verdict::Failed;
            }
            Err(e) => {
                log::warn!("proxy {url}: {e}");
                return Verdict::Failed;
            }
        };
        let status = response.status().as_u16();
        let mut text = Vec::new();
        let read = response.body_mut().as_reader().take(MAX_ANSWER + 1).read_to_end(&mut text);
        match status {
            200 => {
                if read.is_err() || text.len() as u64 > MAX_ANSWER {
                    log::warn!("proxy {url}: the answer could not be read, or is over {MAX_ANSWER} bytes");
                    return Verdict::Failed;
                }
                if text.iter().all(u8::is_ascii_whitespace) {
                    return Verdict::Allow(Value::Null);
                }
                match serde_json::from_slice(&text) {
                    Ok(v) => Verdict::Allow(v),
                    Err(e) => {
                        log::warn!("proxy {url}: the answer is not JSON: {e}");
                        Verdict::Failed
                    }
                }
            }
            401 | 403 => Verdict::Refuse(status),
            other => {
                log::warn!("proxy {url}: answered {other}");
                Verdict::Failed
            }
        }
    }

    /// `--proxy-connect`: the user and caps the backend gives this upgrade,
    /// or the status to refuse it with (`401`/`403` as the backend said,
    /// `503` for anything else). `None` when there is no connect proxy.
    pub fn connect(&self, request: &RequestInfo) -> Option<Result<(String, Option<Caps>), u16>> {
        let url = self.connect.as_deref()?;
        let header = |name: &str| request.header(name).map_or(Value::Null, |v| Value::String(v.to_owned()));
        let body = json!({
            "remote_addr": request.remote_addr.to_string(),
            "origin": header("origin"),
            "path": request.path,
            "query": request.query,
            "headers": {
                "cookie": header("cookie"),
                "authorization": header("authorization"),
                "user-agent": header("user-agent"),
            },
        });
        Some(match self.call(Kind::Connect, url, &body) {
            Verdict::Allow(answer) => admitted(&answer).ok_or_else(|| {
                log::warn!(
                    "proxy {url}: a 200 without a non-empty string user, or with caps that do not parse"
                );
                self.counters[Kind::Connect as usize].failures.fetch_add(1, Relaxed);
                503
            }),
            Verdict::Refuse(status) => Err(status),
            Verdict::Failed => Err(503),
        })
    }

    /// `--proxy-join`: the rights the backend gives `client_id` in `room`
    /// (`allow` in its answer; every right its token gives without one), or
    /// the error to answer. `None` when there is no join proxy.
    pub fn join(
        &self,
        user: Option<&str>,
        client_id: &str,
        room: &str,
    ) -> Option<Result<Option<Rights>, ErrorReply>> {
        let url = self.join.as_deref()?;
        let body = json!({"user": user, "clientId": client_id, "room": room});
        Some(match self.call(Kind::Join, url, &body) {
            // An `allow` that is present must be a list: `null` (a nil list
            // from some serializers, meant as "nothing") is not read as absent,
            // which would give every right of the token.
            Verdict::Allow(answer) => match answer.get("allow") {
                None => Ok(None),
                Some(allow) => match serde_json::from_value::<Vec<Right>>(allow.clone()) {
                    Ok(allow) => Ok(Some(Rights::of(&allow))),
                    Err(_) => {
                        self.counters[Kind::Join as usize].failures.fetch_add(1, Relaxed);
                        Err(unavailable("the backend's allow list does not parse"))
                    }
                },
            },
            Verdict::Refuse(_) => {
                Err(ErrorReply::new(ErrorCode::Forbidden, format!("joining {room:?} was refused")))
            }
            Verdict::Failed => Err(unavailable("the backend did not answer the join")),
        })
    }

    /// `--proxy-publish`: the data to publish (the backend's `data` when its
    /// answer has one, else the client's), or the error to answer. `None`
    /// when there is no publish proxy. A `data` longer than `max_bytes` (the
    /// message size clients are told) is a failure: members may refuse it.
    pub fn publish(
        &self,
        user: Option<&str>,
        client_id: &str,
        room: &str,
        data: &RawJson,
        max_bytes: usize,
    ) -> Option<Result<Option<RawJson>, ErrorReply>> {
        let url = self.publish.as_deref()?;
        let body = json!({"user": user, "clientId": client_id, "room": room, "data": data});
        Some(match self.call(Kind::Publish, url, &body) {
            Verdict::Allow(answer) => match answer.get("data").map(Value::to_string) {
                Some(d) if d.len() > max_bytes => {
                    log::warn!("proxy {url}: the answer's data is over {max_bytes} bytes");
                    self.counters[Kind::Publish as usize].failures.fetch_add(1, Relaxed);
                    Err(unavailable("the backend's data is larger than a message may be"))
                }
                d => Ok(d
                    .and_then(|d| serde_json::value::RawValue::from_string(d).ok())
                    .map(RawJson::from_raw)),
            },
            Verdict::Refuse(_) => {
                Err(ErrorReply::new(ErrorCode::Forbidden, format!("publishing to {room:?} was refused")))
            }
            Verdict::Failed => Err(unavailable("the backend did not answer the publish")),
        })
    }

    /// Whether client publishes pass the publish proxy (binary ones cannot:
    /// the proxy speaks JSON).
    pub fn checks_publishes(&self) -> bool {
        self.publish.is_some()
    }

    /// The proxy lines of `/metrics`.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let mut family = |name: &str, help: &str, value: &dyn Fn(&Counters) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for kind in Kind::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\"}} {}",
                    kind.label(),
                    value(&self.counters[kind as usize])
                );
            }
        };
        family("wshub_proxy_calls_total", "Calls to the backend proxy.", &|c| {
            c.calls.load(Relaxed).to_string()
        });
        family(
            "wshub_proxy_failures_total",
            "Proxy calls without a usable answer (timeout, no connection, unknown status, bad body).",
            &|c| c.failures.load(Relaxed).to_string(),
        );
        family("wshub_proxy_duration_seconds_sum", "Seconds spent in proxy calls, all together.", &|c| {
            format!("{:.6}", Duration::from_micros(c.micros.load(Relaxed)).as_secs_f64())
        });
    }
}

/// `error unavailable`.
fn unavailable(why: &str) -> ErrorReply {
    ErrorReply::new(ErrorCode::Unavailable, why)
}

/// The user and caps of a connect proxy's `200` answer.
fn admitted(answer: &Value) -> Option<(String, Option<Caps>)> {
    let user = answer.get("user")?.as_str().filter(|u| !u.is_empty())?.to_owned();
    let caps = match answer.get("caps") {
        None => None,
        Some(caps) => Some(serde_json::from_value(caps.clone()).ok()?),
    };
    Some((user, caps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::config::check_url;

    #[test]
    fn a_connect_answer_needs_a_user_and_caps_that_parse() {
        assert_eq!(admitted(&json!({"user": "u"})), Some(("u".to_owned(), None)));
        let with_caps = admitted(&json!({"user": "u", "caps": [{"rooms": ["a"], "allow": ["join"]}]}));
        assert!(with_caps.is_some_and(|(_, caps)| caps.is_some()));
        assert_eq!(admitted(&json!({"user": ""})), None);
        assert_eq!(admitted(&json!({"user": 7})), None);
        assert_eq!(admitted(&json!({"user": "u", "caps": "all"})), None);
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(check_url("x", "http://127.0.0.1:8000/connect").is_ok());
        assert!(check_url("x", "https://example.com/").is_err());
        assert!(check_url("x", "http://").is_err());
        assert!(check_url("x", "ftp://a/").is_err());
    }
}
