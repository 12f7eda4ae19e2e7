//! The `wshub` binary: the engine behind a command line.
//!
//! `wshub` alone serves room chat on `ws://127.0.0.1:9001/ws?room=NAME`;
//! `wshub --echo` echoes every message (the conformance target).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use parking_lot::Mutex;
use wshub::{ConnId, Config, EchoHandler, Handler, Message, RequestInfo, Server, ServerHandle};

/// A thread-per-connection WebSocket server with rooms.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the real address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
    /// Echo every text and binary message back to its sender instead of room chat.
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
    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Cli {
    fn config(&self) -> Config {
        Config::default()
            .bind(self.bind)
            .path(self.path.clone())
            .max_message_size(self.max_message_size)
            .outbound_queue(self.outbound_queue)
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
    }
}

/// Room chat: a client joins the room named by `?room=` (default `lobby`);
/// each message goes to the room's other members; joins and leaves are announced.
#[derive(Default)]
struct Chat {
    room_of: Mutex<HashMap<ConnId, String>>,
}

impl Chat {
    fn announce(server: &ServerHandle, room: &str, conn: ConnId, event: &str) {
        let text = serde_json::json!({ "event": event, "room": room, "conn": conn }).to_string();
        let _ = server.broadcast(room, text, Some(conn));
    }
}

impl Handler for Chat {
    fn on_connect(&self, server: &ServerHandle, conn: ConnId, request: &RequestInfo) {
        let room = request
            .query_param("room")
            .filter(|r| wshub::rooms::is_valid_room(r))
            .unwrap_or_else(|| "lobby".to_owned());
        let _ = server.join(conn, &room);
        Chat::announce(server, &room, conn, "join");
        self.room_of.lock().insert(conn, room);
    }

    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        if let Some(room) = self.room_of.lock().get(&conn).cloned() {
            let _ = server.broadcast(&room, message, Some(conn));
        }
    }

    fn on_close(&self, server: &ServerHandle, conn: ConnId, _code: u16, _reason: &str) {
        if let Some(room) = self.room_of.lock().remove(&conn) {
            Chat::announce(server, &room, conn, "leave");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = simplelog::TermLogger::init(
        cli.log_level,
        simplelog::Config::default(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wshub: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config();
    let started = if cli.echo {
        Server::start(config, EchoHandler)
    } else {
        Server::start(config, Chat::default())
    };
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wshub: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests read the real address (port 0 binds a free one) from here.
    println!("wshub listening on {}", server.local_addr());
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: stopping gracefully");
    }
    server.stop();
    ExitCode::SUCCESS
}
