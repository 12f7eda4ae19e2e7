//! Test plumbing for scale-out: a real `redis-server` (Debian's, installed by
//! `.ci/setup`) on a free loopback port, run as a child with a temp dir and
//! killed by its PID, and `wshub` nodes pointed at it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[path = "../protocol_common/mod.rs"]
pub mod protocol_common;
pub use protocol_common::{get, Client, Frame, Wshub, WAIT};

/// A free loopback port: bound to port 0, read back, released.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wshub-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` child on a free port; killed (by PID) on drop.
pub struct Redis {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = TempDir::new("redis");
        let mut redis = Redis { child: None, port: free_port(), dir };
        redis.spawn();
        redis
    }

    /// Starts the server (again) on the same port, loading `dump.rdb` from its dir if there is one.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", self.dir.0.to_str().expect("utf-8 path"), "--dbfilename", "dump.rdb"])
            // DEBUG SLEEP plays a slow Redis (Redis 7 allows DEBUG only when asked).
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server (bash .ci/setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.query(&["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command through the `redis` crate.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    }

    /// Saves its data (SAVE), then kills it by its PID: a restart with
    /// [`spawn`](Self::spawn) comes back with the same data.
    pub fn stop_keeping_data(&mut self) {
        self.query(&["SAVE"]).expect("SAVE");
        self.kill();
    }

    /// Freezes it (SIGSTOP, by PID): its sockets stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen server run again (SIGCONT, by PID).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("redis-server running");
        let status =
            Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -{name} redis-server");
    }

    /// Kills it (SIGKILL, by PID) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `wshub` node on `redis`, with these extra flags.
pub fn node(redis: &Redis, extra: &[&str]) -> Wshub {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--rate-limit", "0"];
    args.extend_from_slice(extra);
    Wshub::start(&args)
}

/// SIGKILLs a node (by its PID) and waits for it.
pub fn kill_node(node: &mut Wshub) {
    let _ = node.child.kill();
    let _ = node.child.wait();
}

/// Reads frames until one satisfies `pred` (bounded in frames and by [`WAIT`] each).
pub fn until(
    client: &mut Client,
    max: usize,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..max {
        if let Frame::Json(v) = client.frame() {
            if pred(&v) {
                return v;
            }
        }
    }
    panic!("no matching frame within {max} frames");
}

/// Waits (bounded) until `GET /healthz` on `addr` answers `status`.
pub fn wait_health(addr: SocketAddr, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if get(addr, "/healthz").0 == status {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz did not answer {status} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something accepts TCP connections on `port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Sends a request and returns its ack's payload, skipping the events
/// (presence, messages) that arrive before it.
pub fn ok(client: &mut Client, kind: &str, payload: serde_json::Value) -> serde_json::Value {
    let id = client.send_request(kind, payload);
    let reply = until(client, 10_000, |v| v["id"] == id.as_str());
    assert_eq!(reply["type"], "ack", "{kind}: {reply}");
    reply["payload"].clone()
}

/// `n` members of `node`, each joined to every room of `rooms`, each on a
/// thread of its own that answers the server's close as soon as it comes
/// (it panics when no close comes within 1000 frames): join them to see
/// every member closed.
pub fn members_answering_close(node: &Wshub, rooms: &[&str], n: usize) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|m| {
            let mut c = node.client();
            for room in rooms {
                c.join(room);
            }
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    match c.ws.read() {
                        Ok(tungstenite::Message::Close(_)) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                panic!("member {m}: no close within 1000 frames");
            })
        })
        .collect()
}

/// A TCP proxy on loopback in front of Redis, run by threads of the test.
/// [`cut_silently`](Proxy::cut_silently) plays a NAT or load balancer that
/// forgot the connections open so far: their bytes go nowhere and nothing is
/// closed; connections made later pass. [`set_down`](Proxy::set_down) plays a
/// network cut that resets: every connection is closed and new ones are
/// closed at once, until it is lifted. [`freeze_calls`](Proxy::freeze_calls)
/// plays a Redis slow to answer calls but not the subscriber: what the node
/// sends on its connections that never sent `SUBSCRIBE` is held (nothing is
/// lost or closed) until it is lifted. Stops (closing everything) on drop.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<AtomicU32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Proxy {
    /// A proxy to `upstream` adding `latency` before each chunk it forwards.
    pub fn start(upstream: u16, latency: Duration) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut2, stop2, down2) = (cut.clone(), stop.clone(), down.clone());
        let (frozen2, held2) = (frozen.clone(), held.clone());
        std::thread::spawn(move || {
            let down3 = down2.clone();
            // `subscriber`: Some for the node-to-Redis half, set once the
            // node sent SUBSCRIBE on it (such a half is never frozen).
            let pump = move |mut from: TcpStream,
                             mut to: TcpStream,
                             era: u32,
                             cut: Arc<AtomicU32>,
                             stop: Arc<AtomicBool>,
                             subscriber: Option<Arc<AtomicBool>>| {
                from.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
                let mut buf = vec![0u8; 64 * 1024];
                let mut waiting: Vec<u8> = Vec::new();
                let freezable = |subscriber: &Option<Arc<AtomicBool>>| {
                    subscriber.as_ref().is_some_and(|s| !s.load(Ordering::Relaxed))
                };
                while !stop.load(Ordering::Relaxed) && !down3.load(Ordering::Relaxed) {
                    if !waiting.is_empty() && !frozen2.load(Ordering::Relaxed) {
                        if to.write_all(&waiting).is_err() {
                            break;
                        }
                        waiting.clear();
                    }
                    match from.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if cut.load(Ordering::Relaxed) > era {
                                continue; // forgotten: the bytes go nowhere
                            }
                            if let Some(s) = &subscriber {
                                if buf[..n].windows(9).any(|w| w == b"SUBSCRIBE") {
                                    s.store(true, Ordering::Relaxed);
                                }
                            }
                            if (frozen2.load(Ordering::Relaxed) && freezable(&subscriber))
                                || !waiting.is_empty()
                            {
                                held2.lock().expect("held").extend_from_slice(&buf[..n]);
                                waiting.extend_from_slice(&buf[..n]);
                                continue; // forwarded once the freeze is lifted, in order
                            }
                            if !latency.is_zero() {
                                std::thread::sleep(latency);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
                if cut.load(Ordering::Relaxed) <= era {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if down2.load(Ordering::Relaxed) {
                            continue; // dropped: closed at once
                        }
                        client.set_nonblocking(false).expect("blocking");
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                        let era = cut2.load(Ordering::Relaxed);
                        let (c2, s2) =
                            (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                        let (cut_a, stop_a, cut_b, stop_b) =
                            (cut2.clone(), stop2.clone(), cut2.clone(), stop2.clone());
                        let (pump_a, pump_b) = (pump.clone(), pump.clone());
                        let subscriber = Some(Arc::new(AtomicBool::new(false)));
                        std::thread::spawn(move || pump_a(client, server, era, cut_a, stop_a, subscriber));
                        std::thread::spawn(move || pump_b(s2, c2, era, cut_b, stop_b, None));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, cut, stop, down, frozen, held }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every connection open now stops forwarding, without being closed.
    pub fn cut_silently(&self) {
        self.cut.fetch_add(1, Ordering::Relaxed);
    }

    /// While `down`, every connection is closed (within 50 ms) and new ones
    /// are closed at once; then connections pass again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// While `frozen`, what the node sends on its connections that are not
    /// its subscriber's (those that never sent `SUBSCRIBE`) is held, not
    /// forwarded; lifted, it goes on in order. A freeze forgets what the
    /// last one held ([`held_contains`](Proxy::held_contains)).
    pub fn freeze_calls(&self, frozen: bool) {
        if frozen {
            self.held.lock().expect("held").clear();
        }
        self.frozen.store(frozen, Ordering::Relaxed);
    }

    /// Whether the bytes held since the last freeze contain `needle`.
    pub fn held_contains(&self, needle: &[u8]) -> bool {
        self.held.lock().expect("held").windows(needle.len()).any(|w| w == needle)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A `wshub` node on the Redis at `url`, with these extra flags.
pub fn node_at(url: &str, extra: &[&str]) -> Wshub {
    let mut args = vec!["--redis", url, "--rate-limit", "0"];
    args.extend_from_slice(extra);
    Wshub::start(&args)
}

/// An HS256 token of `claims` (an `exp` five minutes ahead added) signed
/// with `secret`.
#[allow(dead_code)]
pub fn token_for(claims: serde_json::Value, secret: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let mut claims = claims;
    claims["exp"] = serde_json::json!(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A protocol client of `addr` with a token of `claims` signed with
/// `secret` ([`token_for`]); the server's refusal (or a first frame other
/// than `connected`) as text.
#[allow(dead_code)]
pub fn connect_with_claims(
    addr: SocketAddr,
    claims: serde_json::Value,
    secret: &str,
) -> Result<Client, String> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let url = format!("ws://{addr}/ws?access_token={}", token_for(claims, secret));
    let (ws, _) = tungstenite::client::client(url, stream).map_err(|e| e.to_string())?;
    let mut c = Client::from_parts(ws, None);
    match c.frame() {
        Frame::Json(v) if v["type"] == "connected" => Ok(c),
        other => Err(format!("{other:?}")),
    }
}

/// A protocol client of `addr` with an HS256 token for `user` signed with
/// `secret`; the server's refusal (or a first frame other than `connected`)
/// as text.
#[allow(dead_code)]
pub fn connect_as_user(addr: SocketAddr, user: &str, secret: &str) -> Result<Client, String> {
    connect_with_claims(addr, serde_json::json!({"sub": user}), secret)
}

/// A JSON POST to the backend API of `addr` with `key`; the status.
#[allow(dead_code)]
pub fn api_post(addr: SocketAddr, key: &str, target: &str, body: &str) -> u16 {
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    protocol_common::http(addr, &request).0
}
