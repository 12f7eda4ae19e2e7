//! A C program linking libwshub keeps SIGPIPE's default action (terminate),
//! unlike a Rust binary, which ignores it. So no write wshub makes may raise
//! it: peers that reset while a large echo is being written must cost only
//! their own connections, never the embedding process. Without MSG_NOSIGNAL on
//! the writer's `writev` this test's echo_server dies of SIGPIPE.

mod c_common;

use std::time::Duration;

use c_common::{assert_clean_exit, connect, make, next_message, Program};
use tungstenite::Message;

#[test]
fn a_c_embedder_survives_peers_that_reset_while_it_writes() {
    let build = make("ffi-examples", "nosigpipe", "");
    // Started by std's Command, which restores SIGPIPE's default in the child.
    let mut cmd = std::process::Command::new(build.join("echo_server"));
    cmd.arg("0");
    let server = Program::start(cmd, Duration::from_secs(30));

    let big = vec![7u8; 512 * 1024];
    for _ in 0..40 {
        let mut ws = connect(server.port, "/ws");
        ws.send(Message::binary(big.clone())).expect("send");
        // Wait until the echo has begun, then reset instead of reading it.
        let mut first = [0u8; 1];
        let n = std::io::Read::read(ws.get_mut(), &mut first).expect("read");
        assert_eq!(n, 1);
        let sock = socket2::SockRef::from(ws.get_ref());
        sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
        drop(ws);
    }

    // Still alive and serving.
    let mut ws = connect(server.port, "/ws");
    ws.send(Message::text("still here")).expect("send");
    assert_eq!(next_message(&mut ws), Message::text("still here"));
    drop(ws);

    server.sigint();
    let (status, stderr) = server.wait(Duration::from_secs(20));
    assert_clean_exit("echo_server", status, &stderr);
}
