//! `echo`: C clients each do M sequential `ping` requests (the next one is
//! sent when the previous ack arrives); RTT percentiles and requests/s.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::measure::{CpuMark, Hist};
use crate::net::{Ev, Net};
use crate::{close_all, open_all, proto, Common, Opts, Report};

struct Client {
    tok: usize,
    done: u64,
    sent_at: Instant,
    alive: bool,
}

#[derive(Default)]
struct Tally {
    completed: u64,
    /// Error replies (counted as trips, not RTT samples).
    errors: u64,
    failures: u64,
    first_error: Option<String>,
    unexpected: u64,
}

fn send_ping(net: &mut Net, c: &mut Client, timeout: Duration) {
    let id = c.done + 1;
    let text = format!(r#"{{"type":"ping","id":"{id}","payload":{{"n":{id}}}}}"#);
    c.sent_at = Instant::now();
    net.send_text(c.tok, text.as_bytes());
    net.set_deadline(c.tok, Some((c.sent_at + timeout, "the ping ack")));
}

pub fn run(common: &Common, mut opts: Opts, nofile: u64) -> Result<Report, String> {
    let clients: usize = opts.get("clients", 1)?;
    let trips: u64 = opts.get("trips", 1000)?;
    let concurrency: usize = opts.get("concurrency", 256)?;
    opts.finish()?;
    if clients == 0 || trips == 0 {
        return Err("--clients and --trips must be at least 1".into());
    }
    crate::check_nofile(clients, nofile)?;

    let mut net = Net::new(common.target.clone(), common.timeout).map_err(|e| format!("epoll: {e}"))?;
    eprintln!("echo: {clients} clients x {trips} sequential pings to {}", common.url);
    let opened = open_all(&mut net, clients, concurrency, common.timeout, true)?;
    if opened.tokens.len() < clients {
        return Err(format!(
            "only {} of {clients} clients connected: {}",
            opened.tokens.len(),
            opened.first_error.unwrap_or_default()
        ));
    }
    let mut by_tok: Vec<Option<usize>> = Vec::new();
    let mut cl: Vec<Client> = Vec::with_capacity(clients);
    for &tok in &opened.tokens {
        if by_tok.len() <= tok {
            by_tok.resize(tok + 1, None);
        }
        by_tok[tok] = Some(cl.len());
        cl.push(Client { tok, done: 0, sent_at: Instant::now(), alive: true });
    }

    let mut hist = Hist::default();
    let mut t = Tally::default();
    let mark = CpuMark::start(common.pid);
    let start = Instant::now();
    for c in cl.iter_mut() {
        send_ping(&mut net, c, common.timeout);
    }
    let mut active = clients;
    let mut last_report = Instant::now();
    while active > 0 {
        let timeout = common.timeout;
        net.turn(Duration::from_millis(100), &mut |net, tok, ev| {
            let Some(i) = by_tok.get(tok).copied().flatten() else { return };
            let c = &mut cl[i];
            if !c.alive {
                return;
            }
            match ev {
                Ev::Text(text) => {
                    let now = Instant::now();
                    let env = match proto::parse(text) {
                        Ok(env) => env,
                        Err(e) => {
                            t.unexpected += 1;
                            t.first_error.get_or_insert(e);
                            return;
                        }
                    };
                    let want = (c.done + 1).to_string();
                    if env.id.as_deref() != Some(want.as_str()) {
                        t.unexpected += 1;
                        t.first_error.get_or_insert_with(|| {
                            format!("unexpected {:?} frame with id {:?}", env.ty, env.id)
                        });
                        return;
                    }
                    match env.ty.as_ref() {
                        "ack" => {
                            hist.record(now.duration_since(c.sent_at).as_nanos() as u64);
                            t.completed += 1;
                        }
                        _ => {
                            t.errors += 1;
                            t.first_error
                                .get_or_insert_with(|| format!("ping answered {}", proto::error_text(&env)));
                        }
                    }
                    c.done += 1;
                    if c.done < trips {
                        send_ping(net, c, timeout);
                    } else {
                        net.set_deadline(tok, None);
                        active -= 1;
                    }
                }
                Ev::Closed { code, reason, .. } => {
                    c.alive = false;
                    active -= 1;
                    t.failures += 1;
                    t.first_error
                        .get_or_insert_with(|| format!("server closed a client: {code:?} {reason:?}"));
                }
                Ev::Failed(msg) => {
                    c.alive = false;
                    active -= 1;
                    t.failures += 1;
                    t.first_error.get_or_insert(msg);
                }
                Ev::Upgraded | Ev::Binary(_) => {}
            }
        })
        .map_err(|e| format!("poll: {e}"))?;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("  ... {} of {} trips done", t.completed + t.errors, clients as u64 * trips);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = mark.stop();
    let rps = (t.completed + t.errors) as f64 / elapsed.max(1e-9);
    eprintln!("  {} trips in {elapsed:.2} s: {rps:.0} requests/s", t.completed + t.errors);
    eprintln!("  RTT {}", hist.summary());
    eprintln!(
        "  CPU (of one core): generator {:.1} %, server {}",
        cpu.gen_pct,
        crate::measure::pct(cpu.server_pct)
    );
    let closing = close_all(&mut net)?;

    let mut r = Report::new("echo", common);
    r.put("clients", json!(clients));
    r.put("trips", json!(trips));
    r.put("completed", json!(t.completed));
    r.put("error_replies", json!(t.errors));
    r.put("failures", json!(t.failures));
    r.put("unexpected_frames", json!(t.unexpected));
    r.put("first_error", json!(t.first_error));
    r.put("elapsed_secs", json!((elapsed * 1000.0).round() / 1000.0));
    r.put("requests_per_s", json!(rps.round()));
    r.put("server_cpu_us_per_trip", json!(cpu.server_us_per(t.completed + t.errors)));
    for (k, v) in hist.json_fields() {
        r.put(k, v);
    }
    r.put("clean_closes", json!(closing.clean));
    r.put_net(&net);
    if t.completed != clients as u64 * trips {
        r.problem(format!(
            "{} of {} pings acked; first error: {}",
            t.completed,
            clients as u64 * trips,
            t.first_error.as_deref().unwrap_or("-")
        ));
    } else if t.unexpected > 0 {
        r.problem(format!("{} unexpected frames: {}", t.unexpected, t.first_error.as_deref().unwrap_or("-")));
    }
    r.finish_common(cpu, &closing);
    Ok(r)
}
