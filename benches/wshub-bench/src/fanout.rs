//! `fanout`: S subscribers in K rooms (`bench-0..K-1`, round robin), one
//! publisher per room. Measures delivered room:message frames per second, loss
//! (seq gaps and a missing tail after a drain), latency from the send stamp
//! embedded in `data` to receipt, and slow-consumer closes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::measure::{now_ns, CpuMark, Hist};
use crate::net::{Ev, Net};
use crate::{close_all, open_all, proto, Common, Opts, Report};

#[derive(Clone, Copy)]
enum Role {
    None,
    Sub(usize),
    Pub(usize),
}

struct Sub {
    tok: usize,
    room: usize,
    joined: bool,
    join_seq: u64,
    last_seq: u64,
    received: u64,
    gap_lost: u64,
    out_of_order: u64,
    alive: bool,
}

struct Publisher {
    tok: usize,
    room: usize,
    joined: bool,
    alive: bool,
    inflight: u64,
    sent: u64,
    acked: u64,
    errors: u64,
    max_seq: u64,
    /// Send stamps of the publishes not yet answered, oldest first.
    sent_at: std::collections::VecDeque<u64>,
}

struct Fan {
    roles: Vec<Role>,
    /// `data` is chat-like JSON (`--payload chat`) instead of a padded string.
    chat: bool,
    /// Over the room:messages delivered to subscribers: their wire bytes
    /// (headers and payloads, compressed or not) and their JSON text bytes.
    wire_bytes: u64,
    text_bytes: u64,
    subs: Vec<Sub>,
    pubs: Vec<Publisher>,
    size: usize,
    window: u64,
    flat: bool,
    publishing: bool,
    t_end_ns: u64,
    timeout: Duration,
    hist: Hist,
    /// Publish → ack (or error) latency.
    ack_hist: Hist,
    delivered: u64,
    delivered_in_window: u64,
    presence: u64,
    other: u64,
    /// Error replies to publishes or joins.
    error_replies: u64,
    /// Frames that did not parse or did not belong.
    bad: u64,
    /// Connections that failed (I/O, timeouts, protocol).
    failures: u64,
    /// Server-initiated closes by "code reason" (subscribers and publishers).
    closes: BTreeMap<String, u64>,
    first_error: Option<String>,
    buf: String,
    room_names: Vec<String>,
}

impl Fan {
    fn role(&self, tok: usize) -> Role {
        self.roles.get(tok).copied().unwrap_or(Role::None)
    }

    fn note(&mut self, msg: String) {
        self.first_error.get_or_insert(msg);
    }

    /// Sends one publish with the send stamp and a counter embedded in `data`.
    fn publish(&mut self, net: &mut Net, p: usize) {
        let pb = &mut self.pubs[p];
        pb.sent += 1;
        pb.inflight += 1;
        pb.sent_at.push_back(now_ns());
        let (room, k) = (pb.room, pb.sent);
        let tok = pb.tok;
        self.buf.clear();
        let _ = write!(
            self.buf,
            r#"{{"type":"room:publish","id":"{k}","payload":{{"room":"bench-{room}","data":""#
        );
        if self.chat {
            self.buf.pop(); // the opening quote: chat data is an object
            let stamp = format!("{}:{p}:{k}:", now_ns());
            proto::chat_data(&mut self.buf, &stamp, self.size, k);
            self.buf.push_str("}}");
        } else {
            let data_start = self.buf.len();
            let _ = write!(self.buf, "{}:{p}:{k}:", now_ns());
            let used = self.buf.len() - data_start;
            for _ in used..self.size {
                self.buf.push('x');
            }
            self.buf.push_str("\"}}");
        }
        net.send_text(tok, self.buf.as_bytes());
        net.set_deadline(tok, Some((Instant::now() + self.timeout, "a publish ack")));
    }

    fn fill_window(&mut self, net: &mut Net, p: usize) {
        while self.publishing && self.pubs[p].alive && self.pubs[p].inflight < self.window {
            self.publish(net, p);
        }
    }

    fn on_event(&mut self, net: &mut Net, tok: usize, ev: Ev<'_>) {
        match ev {
            Ev::Text(text) => self.on_text(net, tok, text),
            Ev::Binary(_) => {
                self.bad += 1;
                self.note("unexpected binary frame".into());
            }
            Ev::Upgraded => {}
            Ev::Closed { code, reason, by_us } => {
                self.dead(tok);
                if !by_us {
                    let key = format!("{} {}", code.map_or("none".to_string(), |c| c.to_string()), reason);
                    *self.closes.entry(key.clone()).or_default() += 1;
                    self.note(format!("server closed a connection: {key}"));
                }
            }
            Ev::Failed(msg) => {
                self.dead(tok);
                self.failures += 1;
                self.note(msg);
            }
        }
    }

    fn dead(&mut self, tok: usize) {
        match self.role(tok) {
            Role::Sub(i) => self.subs[i].alive = false,
            Role::Pub(p) => self.pubs[p].alive = false,
            Role::None => {}
        }
    }

    fn on_text(&mut self, net: &mut Net, tok: usize, text: &[u8]) {
        let now = now_ns();
        let env = match proto::parse(text) {
            Ok(env) => env,
            Err(e) => {
                self.bad += 1;
                self.note(e);
                return;
            }
        };
        match (self.role(tok), env.ty.as_ref()) {
            (Role::Sub(i), "room:message") => {
                let seq = env.payload.seq.unwrap_or(0);
                let sent = env.payload.data.as_deref().and_then(|d| d.split(':').next()?.parse::<u64>().ok());
                let Some(sent) = sent else {
                    self.bad += 1;
                    self.note(format!(
                        "room:message without a send stamp: {}",
                        String::from_utf8_lossy(text)
                    ));
                    return;
                };
                let room = self.subs[i].room;
                if env.payload.room.as_deref() != Some(self.room_names[room].as_str()) {
                    self.bad += 1;
                    self.note(format!(
                        "room:message for {:?} on a subscriber of bench-{room}",
                        env.payload.room
                    ));
                    return;
                }
                let s = &mut self.subs[i];
                if seq <= s.last_seq {
                    s.out_of_order += 1;
                } else {
                    s.gap_lost += seq - s.last_seq - 1;
                    s.last_seq = seq;
                }
                s.received += 1;
                self.delivered += 1;
                self.wire_bytes += net.stats.last_message_wire_bytes;
                self.text_bytes += text.len() as u64;
                if now < self.t_end_ns {
                    self.delivered_in_window += 1;
                }
                self.hist.record(now.saturating_sub(sent));
            }
            (Role::Sub(i), "ack") if env.id.as_deref() == Some("j") => {
                let s = &mut self.subs[i];
                s.joined = true;
                s.join_seq = env.payload.seq.unwrap_or(0);
                s.last_seq = s.join_seq;
                net.set_deadline(tok, None);
            }
            (Role::Pub(p), "ack") if env.id.as_deref() == Some("j") => {
                self.pubs[p].joined = true;
                self.pubs[p].max_seq = env.payload.seq.unwrap_or(0);
                net.set_deadline(tok, None);
            }
            (Role::Pub(p), "ack" | "error") if env.id.is_some() => {
                let pb = &mut self.pubs[p];
                pb.inflight = pb.inflight.saturating_sub(1);
                if let Some(sent) = pb.sent_at.pop_front() {
                    self.ack_hist.record(now.saturating_sub(sent));
                }
                if env.ty == "ack" {
                    pb.acked += 1;
                    pb.max_seq = pb.max_seq.max(env.payload.seq.unwrap_or(0));
                } else {
                    pb.errors += 1;
                    self.error_replies += 1;
                    let msg = format!("publish answered {}", proto::error_text(&env));
                    self.note(msg);
                }
                if self.pubs[p].inflight == 0 {
                    net.set_deadline(tok, None);
                }
                if self.flat {
                    self.fill_window(net, p);
                }
            }
            (_, "presence:join" | "presence:leave") => self.presence += 1,
            (_, "error") => {
                self.error_replies += 1;
                let msg = format!("error frame: {}", proto::error_text(&env));
                self.note(msg);
            }
            (Role::Pub(_), "room:message") => {
                self.bad += 1;
                self.note("a publisher got a room:message (echo is off)".into());
            }
            _ => self.other += 1,
        }
    }

    /// The last seq of each room: the highest acked or received.
    fn room_final(&self, rooms: usize) -> Vec<u64> {
        let mut f = vec![0u64; rooms];
        for p in &self.pubs {
            f[p.room] = f[p.room].max(p.max_seq);
        }
        for s in &self.subs {
            f[s.room] = f[s.room].max(s.last_seq);
        }
        f
    }

    /// Deliveries and publish answers so far: a drain goes on while these move.
    fn progress(&self) -> (u64, u64) {
        (self.delivered, self.pubs.iter().map(|p| p.acked + p.errors).sum())
    }

    /// Everything acked and every live subscriber caught up.
    fn drained(&self, rooms: usize) -> bool {
        if self.pubs.iter().any(|p| p.alive && p.inflight > 0) {
            return false;
        }
        let f = self.room_final(rooms);
        self.subs.iter().all(|s| !s.alive || !s.joined || s.last_seq >= f[s.room])
    }
}

fn room_name(room: usize) -> String {
    format!("bench-{room}")
}

/// How long the drain after the window waits: while deliveries or publish
/// answers keep arriving, at most `stall` apart, and `max` in all. A server
/// that is behind but still delivering is waited for; one that has stopped is
/// given up on `stall` after its last delivery, and what is missing is lost.
struct Drain {
    stall: Duration,
    end: Instant,
    last: (u64, u64),
    moved: Instant,
}

impl Drain {
    fn new(start: Instant, stall_secs: f64, max_secs: f64) -> Drain {
        let stall = Duration::from_secs_f64(stall_secs);
        let end = start + Duration::from_secs_f64(max_secs).max(stall);
        Drain { stall, end, last: (0, 0), moved: start }
    }

    /// With `progress` (see [`Fan::progress`]) at `now`: wait until the
    /// instant returned, or `None` when the drain is over.
    fn until(&mut self, now: Instant, progress: (u64, u64)) -> Option<Instant> {
        if progress != self.last {
            self.last = progress;
            self.moved = now;
        }
        let until = (self.moved + self.stall).min(self.end);
        (now < until).then_some(until)
    }
}

/// Turns until `done` or `deadline`; false on the deadline.
fn turn_until(
    net: &mut Net,
    fan: &mut Fan,
    deadline: Instant,
    mut done: impl FnMut(&Fan) -> bool,
) -> Result<bool, String> {
    loop {
        if done(fan) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let wait = deadline.duration_since(now).min(Duration::from_millis(20));
        net.turn(wait, &mut |net, tok, ev| fan.on_event(net, tok, ev)).map_err(|e| format!("poll: {e}"))?;
    }
}

pub fn run(common: &Common, mut opts: Opts, nofile: u64) -> Result<Report, String> {
    let subscribers: usize = opts.get("subscribers", 1000)?;
    let rooms: usize = opts.get("rooms", 1)?;
    let size: usize = opts.get("size", 100)?;
    let rate: f64 = opts.get("rate", 0.0)?;
    let secs: f64 = opts.get("secs", 10.0)?;
    let window: u64 = opts.get("window", 64)?;
    let drain_secs: f64 = opts.get("drain", 5.0)?;
    let drain_max_secs: f64 = opts.get("drain-max", 60.0)?;
    let concurrency: usize = opts.get("concurrency", 256)?;
    // Another node of the same cluster: connections alternate between --url
    // and it (subscribers split evenly; with an even --subscribers the one
    // publisher of one room is on --url).
    let also: Option<String> = opts.opt("also-url")?;
    // `bytes`: data is a string of the stamp padded with 'x' to --size;
    // `chat`: data is chat-like JSON of about --size bytes.
    let payload: String = opts.get("payload", "bytes".to_string())?;
    // Offer permessage-deflate (as browsers do) on every connection.
    let deflate: bool = opts.get("deflate", false)?;
    opts.finish()?;
    let chat = match payload.as_str() {
        "bytes" => false,
        "chat" => true,
        other => return Err(format!("--payload {other:?}: bytes or chat")),
    };
    if rooms == 0 || subscribers < rooms {
        return Err("need --rooms >= 1 and at least one subscriber per room".into());
    }
    if window == 0 || secs <= 0.0 || rate < 0.0 {
        return Err("need --window >= 1, --secs > 0, --rate >= 0".into());
    }
    crate::check_nofile(subscribers + rooms, nofile)?;

    let mut net = Net::new(common.target.clone(), common.timeout).map_err(|e| format!("epoll: {e}"))?;
    if let Some(url) = &also {
        net.also(crate::net::Target::parse_with_ca(url, None)?);
    }
    if deflate {
        net.offer_deflate();
    }
    eprintln!(
        "fanout: {subscribers} subscribers in {rooms} room(s), {rooms} publisher(s), {size}-byte data, {} for {secs} s",
        if rate > 0.0 { format!("{rate} msgs/s per room") } else { format!("flat out ({window} in flight)") }
    );
    let opened = open_all(&mut net, subscribers + rooms, concurrency, common.timeout, true)?;
    if opened.tokens.len() < subscribers + rooms {
        return Err(format!(
            "only {} of {} connections opened: {}",
            opened.tokens.len(),
            subscribers + rooms,
            opened.first_error.unwrap_or_default()
        ));
    }
    eprintln!("  {} connections open in {:.2} s", opened.tokens.len(), opened.elapsed.as_secs_f64());

    let max_tok = opened.tokens.iter().copied().max().unwrap_or(0);
    let mut fan = Fan {
        roles: vec![Role::None; max_tok + 1],
        chat,
        wire_bytes: 0,
        text_bytes: 0,
        subs: Vec::with_capacity(subscribers),
        pubs: Vec::with_capacity(rooms),
        size,
        window,
        flat: rate == 0.0,
        publishing: false,
        t_end_ns: 0,
        timeout: common.timeout,
        hist: Hist::default(),
        ack_hist: Hist::default(),
        delivered: 0,
        delivered_in_window: 0,
        presence: 0,
        other: 0,
        error_replies: 0,
        bad: 0,
        failures: 0,
        closes: BTreeMap::new(),
        first_error: None,
        buf: String::with_capacity(size + 160),
        room_names: (0..rooms).map(room_name).collect(),
    };
    for (i, &tok) in opened.tokens[..subscribers].iter().enumerate() {
        fan.roles[tok] = Role::Sub(i);
        fan.subs.push(Sub {
            tok,
            room: i % rooms,
            joined: false,
            join_seq: 0,
            last_seq: 0,
            received: 0,
            gap_lost: 0,
            out_of_order: 0,
            alive: true,
        });
    }
    for (p, &tok) in opened.tokens[subscribers..].iter().enumerate() {
        fan.roles[tok] = Role::Pub(p);
        fan.pubs.push(Publisher {
            tok,
            room: p,
            joined: false,
            alive: true,
            inflight: 0,
            sent: 0,
            acked: 0,
            errors: 0,
            max_seq: 0,
            sent_at: std::collections::VecDeque::new(),
        });
    }

    // Subscribers join first, then the publishers (a publisher must be a member).
    let join_start = Instant::now();
    for s in &fan.subs {
        net.send_text(s.tok, proto::join(&room_name(s.room), "j").as_bytes());
        net.set_deadline(s.tok, Some((Instant::now() + common.timeout, "the room:join ack")));
    }
    let joined =
        turn_until(&mut net, &mut fan, Instant::now() + common.timeout + Duration::from_secs(1), |f| {
            f.subs.iter().all(|s| s.joined || !s.alive)
        })?;
    let subs_joined = fan.subs.iter().filter(|s| s.joined && s.alive).count();
    if !joined || subs_joined < subscribers {
        return Err(format!(
            "only {subs_joined} of {subscribers} subscribers joined: {}",
            fan.first_error.as_deref().unwrap_or("-")
        ));
    }
    for p in &fan.pubs {
        net.send_text(p.tok, proto::join(&room_name(p.room), "j").as_bytes());
        net.set_deadline(p.tok, Some((Instant::now() + common.timeout, "the room:join ack")));
    }
    turn_until(&mut net, &mut fan, Instant::now() + common.timeout + Duration::from_secs(1), |f| {
        f.pubs.iter().all(|p| p.joined || !p.alive)
    })?;
    if fan.pubs.iter().any(|p| !p.joined || !p.alive) {
        return Err(format!("not every publisher joined: {}", fan.first_error.as_deref().unwrap_or("-")));
    }
    // Let the presence events of the joins arrive before measuring.
    let settle = Instant::now() + Duration::from_millis(300);
    turn_until(&mut net, &mut fan, settle, |_| false)?;
    eprintln!("  joined in {:.2} s ({} presence events)", join_start.elapsed().as_secs_f64(), fan.presence);

    // The measured window.
    let mark = CpuMark::start(common.pid);
    let t0 = now_ns();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    fan.t_end_ns = t0 + (secs * 1e9) as u64;
    fan.publishing = true;
    let interval_ns = if rate > 0.0 { 1e9 / rate } else { 0.0 };
    let due = |k: u64| t0 + (k as f64 * interval_ns) as u64;
    // Rate mode: publishes sent over one interval after their scheduled time
    // (the window of unacked publishes was full), and the worst delay.
    let (mut late, mut max_lag) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let mut last_delivered = 0u64;
    if fan.flat {
        for p in 0..rooms {
            fan.fill_window(&mut net, p);
        }
    }
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut wait = end.duration_since(now).min(Duration::from_millis(10));
        if !fan.flat {
            let now_ns = now_ns();
            for p in 0..rooms {
                while fan.pubs[p].alive
                    && fan.pubs[p].inflight < window
                    && due(fan.pubs[p].sent) <= now_ns
                    && now_ns < fan.t_end_ns
                {
                    let lag = now_ns - due(fan.pubs[p].sent);
                    if lag as f64 > interval_ns {
                        late += 1;
                    }
                    max_lag = max_lag.max(lag);
                    fan.publish(&mut net, p);
                }
                // A full window waits for an ack (an event), not for the clock.
                if fan.pubs[p].alive && fan.pubs[p].inflight < window {
                    let next = due(fan.pubs[p].sent);
                    wait = wait.min(Duration::from_nanos(next.saturating_sub(now_ns)));
                }
            }
        }
        net.turn(wait, &mut |net, tok, ev| fan.on_event(net, tok, ev)).map_err(|e| format!("poll: {e}"))?;
        if fan.pubs.iter().all(|p| !p.alive) {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            let dt = last_report.elapsed().as_secs_f64();
            last_report = Instant::now();
            let sent: u64 = fan.pubs.iter().map(|p| p.sent).sum();
            eprintln!(
                "  ... {:.0} s: published {sent}, delivered {} ({:.0}/s lately)",
                start.elapsed().as_secs_f64(),
                fan.delivered,
                (fan.delivered - last_delivered) as f64 / dt
            );
            last_delivered = fan.delivered;
        }
    }
    fan.publishing = false;
    let wall = start.elapsed().as_secs_f64();
    let cpu = mark.stop();

    // Drain: the remaining acks, and every live subscriber up to its room's
    // last seq, for as long as the server keeps delivering (see `Drain`).
    let drain_start = Instant::now();
    let mut drain = Drain::new(drain_start, drain_secs, drain_max_secs);
    let drained = loop {
        if fan.drained(rooms) {
            break true;
        }
        let now = Instant::now();
        let Some(until) = drain.until(now, fan.progress()) else { break false };
        let wait = until.duration_since(now).min(Duration::from_millis(20));
        net.turn(wait, &mut |net, tok, ev| fan.on_event(net, tok, ev)).map_err(|e| format!("poll: {e}"))?;
    };
    let drain_took = drain_start.elapsed().as_secs_f64();

    let finals = fan.room_final(rooms);
    let published: u64 = fan.pubs.iter().map(|p| p.sent).sum();
    let acked: u64 = fan.pubs.iter().map(|p| p.acked).sum();
    let publish_errors: u64 = fan.pubs.iter().map(|p| p.errors).sum();
    let unacked = published - acked - publish_errors;
    let mut expected = 0u64;
    let mut gaps = 0u64;
    let mut tail = 0u64;
    let mut out_of_order = 0u64;
    for s in &fan.subs {
        expected += finals[s.room] - s.join_seq;
        gaps += s.gap_lost;
        tail += finals[s.room].saturating_sub(s.last_seq);
        out_of_order += s.out_of_order;
    }
    let lost = gaps + tail;
    let subs_closed = fan.subs.iter().filter(|s| !s.alive).count();
    let delivered_per_s = fan.delivered_in_window as f64 / secs;
    let closing = close_all(&mut net)?;

    eprintln!(
        "  published {published} in {wall:.2} s ({:.0}/s), acked {acked}, errors {publish_errors}, unacked {unacked}",
        published as f64 / wall
    );
    eprintln!(
        "  delivered {} ({} in the window: {delivered_per_s:.0} msgs/s), expected {expected}, lost {lost} ({gaps} in gaps, {tail} tail), out of order {out_of_order}",
        fan.delivered, fan.delivered_in_window
    );
    eprintln!("  drain: {} after {drain_took:.2} s", if drained { "complete" } else { "INCOMPLETE" });
    eprintln!("  latency {}", fan.hist.summary());
    eprintln!("  publish→ack {}", fan.ack_hist.summary());
    eprintln!("  subscribers closed: {subs_closed}, server closes: {:?}", fan.closes);
    eprintln!(
        "  CPU (of one core): generator {:.1} %, server {}",
        cpu.gen_pct,
        crate::measure::pct(cpu.server_pct)
    );

    let mut r = Report::new("fanout", common);
    r.put("subscribers", json!(subscribers));
    r.put("rooms", json!(rooms));
    r.put("size", json!(size));
    r.put("payload", json!(payload));
    r.put("deflate_offered", json!(deflate));
    r.put("rate", json!(rate));
    r.put("secs", json!(secs));
    r.put("window", json!(window));
    r.put("drain_secs", json!(drain_secs));
    r.put("drain_max_secs", json!(drain_max_secs));
    r.put("published", json!(published));
    r.put("acked", json!(acked));
    r.put("publish_errors", json!(publish_errors));
    r.put("unacked", json!(unacked));
    r.put("publish_per_s", json!((published as f64 / wall).round()));
    r.put("late_publishes", json!(late));
    r.put("max_publish_lag_us", json!(max_lag / 1000));
    r.put("expected_deliveries", json!(expected));
    r.put("delivered", json!(fan.delivered));
    r.put("delivered_in_window", json!(fan.delivered_in_window));
    r.put("delivered_per_s", json!(delivered_per_s.round()));
    r.put("lost", json!(lost));
    r.put("server_cpu_us_per_delivered", json!(cpu.server_us_per(fan.delivered_in_window)));
    let per = |b: u64| {
        if fan.delivered > 0 {
            json!((b as f64 / fan.delivered as f64 * 10.0).round() / 10.0)
        } else {
            json!(null)
        }
    };
    r.put("wire_bytes_per_delivered", per(fan.wire_bytes));
    r.put("text_bytes_per_delivered", per(fan.text_bytes));
    r.put("lost_gaps", json!(gaps));
    r.put("lost_tail", json!(tail));
    r.put("out_of_order", json!(out_of_order));
    r.put("drained", json!(drained));
    r.put("drain_secs_taken", json!((drain_took * 1000.0).round() / 1000.0));
    for (k, v) in fan.hist.json_fields() {
        r.put(k, v);
    }
    r.put("latency_samples", json!(fan.hist.count()));
    for (k, v) in fan.ack_hist.json_fields() {
        r.put(&format!("ack_{k}"), v);
    }
    r.put("subscribers_closed", json!(subs_closed));
    r.put("server_closes", json!(fan.closes));
    r.put("failures", json!(fan.failures));
    r.put("error_replies", json!(fan.error_replies));
    r.put("bad_frames", json!(fan.bad));
    r.put("first_error", json!(fan.first_error));
    r.put("clean_closes", json!(closing.clean));
    r.put_net(&net);
    if lost > 0 {
        r.problem(format!("{lost} deliveries lost ({gaps} in seq gaps, {tail} missing at the end)"));
    }
    if out_of_order > 0 {
        r.problem(format!("{out_of_order} room:messages with an old or repeated seq"));
    }
    if !fan.closes.is_empty() {
        r.problem(format!("server closed connections: {:?}", fan.closes));
    }
    if unacked > 0 || publish_errors > 0 || fan.error_replies > publish_errors {
        r.problem(format!(
            "{unacked} publishes unacked, {publish_errors} refused, {} error frames",
            fan.error_replies
        ));
    }
    if fan.failures > 0 || fan.bad > 0 {
        r.problem(format!(
            "{} connection failures, {} bad frames: {}",
            fan.failures,
            fan.bad,
            fan.first_error.as_deref().unwrap_or("-")
        ));
    }
    r.finish_common(cpu, &closing);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::Drain;
    use std::time::{Duration, Instant};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_drain_waits_for_a_server_still_delivering_past_the_stall_time() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0, 5.0, 60.0);
        // A delivery every 4 s for 20 s: never 5 s without one.
        for i in 0..=5u64 {
            let now = t0 + 4 * S * i as u32;
            assert_eq!(d.until(now, (100 + i, 10)), Some(now + 5 * S), "at {i}");
        }
    }

    #[test]
    fn a_drain_gives_up_the_stall_time_after_the_last_delivery() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0, 5.0, 60.0);
        assert_eq!(d.until(t0, (7, 1)), Some(t0 + 5 * S));
        assert_eq!(d.until(t0 + 2 * S, (8, 1)), Some(t0 + 7 * S));
        assert_eq!(d.until(t0 + 6 * S, (8, 1)), Some(t0 + 7 * S));
        assert_eq!(d.until(t0 + 7 * S, (8, 1)), None);
    }

    #[test]
    fn a_drain_ends_at_its_maximum_however_the_server_delivers() {
        let t0 = Instant::now();
        let mut d = Drain::new(t0, 5.0, 12.0);
        assert_eq!(d.until(t0 + 10 * S, (1, 0)), Some(t0 + 12 * S));
        assert_eq!(d.until(t0 + 12 * S, (2, 0)), None);
        // A maximum below the stall time is the stall time.
        let mut d = Drain::new(t0, 5.0, 1.0);
        assert_eq!(d.until(t0, (0, 0)), Some(t0 + 5 * S));
    }
}
