//! `conns`: open N idle connections, then read what each one costs the server.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::measure::{listen_overflows, pct, CpuMark, ProcStats};
use crate::net::{Ev, Net};
use crate::{close_all, open_all, Common, Opts, Report};

/// Keeps the connections serviced (pongs) for `dur`; counts the ones lost.
fn hold(net: &mut Net, dur: Duration, lost: &mut u64, first: &mut Option<String>) -> Result<(), String> {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        net.turn(left, &mut |_, _, ev| match ev {
            Ev::Closed { code, reason, .. } => {
                *lost += 1;
                first.get_or_insert_with(|| format!("server closed an idle connection: {code:?} {reason:?}"));
            }
            Ev::Failed(msg) => {
                *lost += 1;
                first.get_or_insert(msg);
            }
            _ => {}
        })
        .map_err(|e| format!("poll: {e}"))?;
    }
    Ok(())
}

pub fn run(common: &Common, mut opts: Opts, nofile: u64) -> Result<Report, String> {
    let pid: u32 = common.pid.ok_or("conns needs --pid (the server's pid)")?;
    let n: usize = opts.get("n", 1000)?;
    let concurrency: usize = opts.get("concurrency", 256)?;
    let hold_secs: f64 = opts.get("hold", 2.0)?;
    let settle_secs: f64 = opts.get("settle", 3.0)?;
    opts.finish()?;
    crate::check_nofile(n, nofile)?;

    let mut net = Net::new(common.target.clone(), common.timeout).map_err(|e| format!("epoll: {e}"))?;
    let before = ProcStats::read(pid)?;
    eprintln!("conns: opening {n} connections to {} ({concurrency} handshakes in flight)", common.url);
    eprintln!("  server before: {before}");

    let overflows_before = listen_overflows();
    let mark = CpuMark::start(Some(pid));
    let opened = open_all(&mut net, n, concurrency, common.timeout, true)?;
    let cpu = mark.stop();
    let overflows = overflows_before.zip(listen_overflows()).map(|(a, b)| b.saturating_sub(a));
    let connected = opened.tokens.len();
    if connected == 0 {
        return Err(format!("no connection opened: {}", opened.first_error.unwrap_or_default()));
    }
    let secs = opened.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { connected as f64 / secs } else { 0.0 };
    eprintln!("  {connected} connected in {secs:.2} s: {rate:.0} handshakes/s");
    if let Some(o) = overflows.filter(|&o| o > 0) {
        eprintln!(
            "  note: {o} listen-queue overflows meanwhile (machine-wide TcpExt ListenOverflows): the server's \
             accept backlog is smaller than --concurrency, and each overflow costs its client a ~1 s SYN \
             retransmit, so handshakes/s measures that timer more than the server"
        );
    }

    // Let the server settle after the burst (wshub's readers give back
    // their handshake's stack pages once their connection has been quiet a
    // second), then read it. What settling costs the server is counted
    // apart from the opening.
    let (mut lost, mut first_lost) = (0u64, None);
    let settle_mark = CpuMark::start(Some(pid));
    hold(&mut net, Duration::from_secs_f64(settle_secs), &mut lost, &mut first_lost)?;
    let settled = settle_mark.stop();
    let held = ProcStats::read(pid)?;
    let idle_mark = CpuMark::start(Some(pid));
    hold(&mut net, Duration::from_secs_f64(hold_secs), &mut lost, &mut first_lost)?;
    let idle = idle_mark.stop();
    let per = |after: u64, before: u64| {
        if connected == 0 {
            0.0
        } else {
            ((after as f64 - before as f64) / connected as f64 * 1000.0).round() / 1000.0
        }
    };
    let rss_per = per(held.rss_kb, before.rss_kb);
    let threads_per = per(held.threads, before.threads);
    let fds_per = per(held.fds, before.fds);
    eprintln!("  server holding: {held}");
    eprintln!("  per connection: RSS {rss_per:.1} KiB, threads {threads_per:.3}, fds {fds_per:.3}");
    eprintln!(
        "  CPU while opening: generator {:.1} %, server {}; server while settling {}, while idle {}",
        cpu.gen_pct,
        pct(cpu.server_pct),
        pct(settled.server_pct),
        pct(idle.server_pct)
    );

    let closing = close_all(&mut net)?;
    // The server's threads and fds should go back to the baseline.
    let settle_start = Instant::now();
    let mut after = ProcStats::read(pid)?;
    while (after.threads > before.threads || after.fds > before.fds)
        && settle_start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(100));
        after = ProcStats::read(pid)?;
    }
    let settle_ms = settle_start.elapsed().as_millis() as u64;
    eprintln!(
        "  closed: {} clean, {} not; server after close: {after} ({settle_ms} ms to settle)",
        closing.clean, closing.unclean
    );

    let mut r = Report::new("conns", common);
    r.put("pid", json!(pid));
    r.put("n", json!(n));
    r.put("concurrency", json!(concurrency));
    r.put("hold_secs", json!(hold_secs));
    r.put("settle_secs", json!(settle_secs));
    r.put("connected", json!(connected));
    r.put("errors", json!(opened.errors));
    r.put("first_error", json!(opened.first_error));
    r.put("open_secs", json!((secs * 1000.0).round() / 1000.0));
    r.put("handshakes_per_s", json!(rate.round()));
    r.put("server_cpu_us_per_handshake", json!(cpu.server_us_per(connected as u64)));
    r.put("server_cpu_us_per_conn_settling", json!(settled.server_us_per(connected as u64)));
    r.put("listen_overflows", json!(overflows));
    r.put("before", before.json());
    r.put("held", held.json());
    r.put("after_close", after.json());
    r.put("rss_per_conn_kb", json!(rss_per));
    r.put("threads_per_conn", json!(threads_per));
    r.put("fds_per_conn", json!(fds_per));
    r.put("server_idle_cpu_pct", json!(idle.server_pct));
    r.put("lost_while_held", json!(lost));
    r.put("clean_closes", json!(closing.clean));
    r.put("unclean_closes", json!(closing.unclean));
    r.put_net(&net);
    if connected < n || opened.errors > 0 {
        r.problem(format!(
            "{connected} of {n} connected; first error: {}",
            opened.first_error.as_deref().unwrap_or("-")
        ));
    }
    if lost > 0 {
        r.problem(format!("{lost} idle connections lost: {}", first_lost.as_deref().unwrap_or("-")));
    }
    r.finish_common(cpu, &closing);
    Ok(r)
}
