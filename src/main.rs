//! The `wshub` binary: the engine behind a command line.
//!
//! `wshub` alone serves wire protocol v1 (`docs/protocol.md`) on
//! `ws://127.0.0.1:9001/ws`, with `/healthz`, `/metrics` and a demo page at `/`;
//! `wshub --echo` echoes every message (the conformance target).
//!
//! Settings come from, by priority: flags given on the command line, the
//! `--config` TOML file, the defaults of [`Config`] and [`ProtocolConfig`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{Config, EchoHandler, PemSource, Server};

/// A thread-per-connection WebSocket server with rooms.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the real address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
    /// TOML file with settings (keys are the flag names with `_`, e.g.
    /// `rate_limit = 50`); flags given on the command line override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Echo every text and binary message back to its sender instead of serving the protocol.
    #[arg(long)]
    echo: bool,
    /// Request path that upgrades to WebSocket.
    #[arg(long, default_value_t = Config::default().path)]
    path: String,
    /// Largest message accepted, in bytes; larger closes with 1009.
    #[arg(long, default_value_t = Config::default().max_message_size)]
    max_message_size: usize,
    /// Frames that may queue for one client before it is closed with 1013.
    #[arg(long, default_value_t = Config::default().outbound_queue)]
    outbound_queue: usize,
    /// Bytes that may queue for one client (data, replies, replays, pongs, close) before it is closed with 1013.
    #[arg(long, default_value_t = Config::default().outbound_max_bytes)]
    outbound_max_bytes: usize,
    /// Frames per second one client may send, every kind counted, burst twice that; past it closes with 1008; 0 = off.
    #[arg(long, default_value_t = Config::default().frame_rate_limit)]
    frame_rate_limit: u32,
    /// Frames one message may arrive in; more closes with 1009; 0 = no limit.
    #[arg(long, default_value_t = Config::default().max_fragments)]
    max_fragments: usize,
    /// Milliseconds between server pings.
    #[arg(long, default_value_t = ms(Config::default().heartbeat_interval))]
    heartbeat_ms: u64,
    /// Milliseconds of silence after which a client is dropped.
    #[arg(long, default_value_t = ms(Config::default().idle_timeout))]
    idle_timeout_ms: u64,
    /// Open connections allowed; more are refused with 503.
    #[arg(long, default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Stack bytes reserved per reader thread.
    #[arg(long, default_value_t = Config::default().reader_stack_size)]
    reader_stack_size: usize,
    /// Stack bytes reserved per writer thread.
    #[arg(long, default_value_t = Config::default().writer_stack_size)]
    writer_stack_size: usize,
    /// Initial read buffer per connection, in bytes.
    #[arg(long, default_value_t = Config::default().read_buffer_size)]
    read_buffer_size: usize,
    /// Most bytes one writev batch gathers.
    #[arg(long, default_value_t = Config::default().write_buffer_size)]
    write_buffer_size: usize,
    /// Milliseconds a client has to send its HTTP request.
    #[arg(long, default_value_t = ms(Config::default().handshake_timeout))]
    handshake_timeout_ms: u64,
    /// Milliseconds a closing connection gets to finish the close handshake.
    #[arg(long, default_value_t = ms(Config::default().close_timeout))]
    close_timeout_ms: u64,
    /// Milliseconds a graceful stop waits for connections before cutting them.
    #[arg(long, default_value_t = ms(Config::default().shutdown_timeout))]
    shutdown_timeout_ms: u64,
    /// Commands that may wait in the room hub's queue.
    #[arg(long, default_value_t = Config::default().hub_queue)]
    hub_queue: usize,
    /// Messages per second one client may send (token bucket); 0 turns the limit off.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = ProtocolConfig::default().rate_limit)]
    rate_limit: u32,
    /// Messages a client may send in a burst before the rate applies.
    #[arg(long, value_name = "N", default_value_t = ProtocolConfig::default().rate_burst)]
    rate_burst: u32,
    /// Messages each room keeps for recovery (0 keeps none).
    #[arg(long, default_value_t = ProtocolConfig::default().history_size)]
    history_size: usize,
    /// Milliseconds each room keeps a message for recovery.
    #[arg(long, default_value_t = ms(ProtocolConfig::default().history_ttl))]
    history_ttl_ms: u64,
    /// Milliseconds between a stop signal and the stop, while /healthz answers 503
    /// and new upgrades are refused (lets a load balancer notice).
    #[arg(long, default_value_t = 0)]
    drain_delay_ms: u64,
    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
    /// Certificate chain (PEM) to serve wss:// and https:// on the port (needs --tls-key); SIGHUP re-reads it.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to; clients without one fail the TLS handshake.
    #[arg(long, value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Takes the file's value unless the flag was given on the command line.
fn set<T>(matches: &ArgMatches, id: &str, field: &mut T, from_file: T) {
    if matches.value_source(id) != Some(ValueSource::CommandLine) {
        *field = from_file;
    }
}

impl Cli {
    /// Parses the command line and lays it over the config file: a flag given
    /// explicitly wins, then the file, then the flag's default.
    fn load() -> Result<Cli, String> {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let Some(path) = cli.config.clone() else { return Ok(cli) };
        let file = wshub::ConfigFile::load(&path)?;
        let m = &matches;
        macro_rules! merge {
            ($($field:ident),*) => {$(
                if let Some(v) = file.$field { set(m, stringify!($field), &mut cli.$field, v); }
            )*};
        }
        merge!(
            bind,
            echo,
            path,
            max_message_size,
            outbound_queue,
            outbound_max_bytes,
            frame_rate_limit,
            max_fragments,
            heartbeat_ms,
            idle_timeout_ms,
            max_connections,
            reader_stack_size,
            writer_stack_size,
            read_buffer_size,
            write_buffer_size,
            handshake_timeout_ms,
            close_timeout_ms,
            shutdown_timeout_ms,
            hub_queue,
            rate_limit,
            rate_burst,
            history_size,
            history_ttl_ms,
            drain_delay_ms
        );
        if let Some(level) = file.log_level {
            let level = level
                .parse()
                .map_err(|_| format!("{}: log_level: unknown level {level:?}", path.display()))?;
            set(m, "log_level", &mut cli.log_level, level);
        }
        macro_rules! merge_optional {
            ($($field:ident),*) => {$(
                if file.$field.is_some() && matches.value_source(stringify!($field)) != Some(ValueSource::CommandLine) {
                    cli.$field = file.$field.clone();
                }
            )*};
        }
        merge_optional!(tls_cert, tls_key, tls_client_ca);
        Ok(cli)
    }

    fn protocol_config(&self) -> ProtocolConfig {
        ProtocolConfig::default()
            .rate_limit(self.rate_limit)
            .rate_burst(self.rate_burst)
            .history_size(self.history_size)
            .history_ttl(Duration::from_millis(self.history_ttl_ms))
    }

    fn config(&self) -> Config {
        Config::default()
            .bind(self.bind)
            .path(self.path.clone())
            .max_message_size(self.max_message_size)
            .outbound_queue(self.outbound_queue)
            .outbound_max_bytes(self.outbound_max_bytes)
            .frame_rate_limit(self.frame_rate_limit)
            .max_fragments(self.max_fragments)
            .heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
            .idle_timeout(Duration::from_millis(self.idle_timeout_ms))
            .max_connections(self.max_connections)
            .reader_stack_size(self.reader_stack_size)
            .writer_stack_size(self.writer_stack_size)
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .handshake_timeout(Duration::from_millis(self.handshake_timeout_ms))
            .close_timeout(Duration::from_millis(self.close_timeout_ms))
            .shutdown_timeout(Duration::from_millis(self.shutdown_timeout_ms))
            .hub_queue(self.hub_queue)
            .tls_cert(self.tls_cert.clone().map(PemSource::File))
            .tls_key(self.tls_key.clone().map(PemSource::File))
            .tls_client_ca(self.tls_client_ca.clone().map(PemSource::File))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::load() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("wshub: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = simplelog::TermLogger::init(
        cli.log_level,
        simplelog::Config::default(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wshub: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config();
    let protocol = ProtocolHandler::new(cli.protocol_config());
    let started =
        if cli.echo { Server::start(config, EchoHandler) } else { Server::start(config, protocol.clone()) };
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wshub: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests read the real address (port 0 binds a free one) from here.
    println!("wshub listening on {}", server.local_addr());
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            // New connections get the new certificate; open ones stay up. A
            // bad file is logged (by reload_tls) and the old one kept.
            let _ = server.reload_tls(); // logs its outcome either way
            continue;
        }
        log::info!("signal {signal}: stopping gracefully");
        break;
    }
    if cli.drain_delay_ms > 0 {
        protocol.begin_drain();
        std::thread::sleep(Duration::from_millis(cli.drain_delay_ms));
    }
    server.stop();
    ExitCode::SUCCESS
}
