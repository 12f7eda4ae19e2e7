//! `ffi-examples/adopt_server.c`, built under ASan + UBSan: a C HTTP server
//! that owns its port, serves its own page there and hands `/ws` requests to
//! wshub (`wshub_adopt`, wshub with no listener). Driven by Python's
//! `websockets` (two chat clients) and urllib (the page), then SIGINT.

mod c_common;
use c_common as common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SCRIPT: &str = r#"
import asyncio, sys, urllib.request, websockets
port = sys.argv[1]
page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20).read().decode()
assert "served by wshub" in page, page
async def main():
    url = f"ws://127.0.0.1:{port}/ws"
    async with websockets.connect(url, open_timeout=20) as a, websockets.connect(url, open_timeout=20) as b:
        await a.send("hello from a")
        got_a = await asyncio.wait_for(a.recv(), 20)
        got_b = await asyncio.wait_for(b.recv(), 20)
        assert got_a == got_b == "hello from a", (got_a, got_b)
        await b.send("and b")
        assert await asyncio.wait_for(a.recv(), 20) == "and b"
    print("chat ok")
asyncio.run(asyncio.wait_for(main(), 60))
"#;

#[test]
fn adopt_server_serves_its_page_and_a_websocket_chat_on_one_port() {
    let bin = make("ffi-examples", "asan", SANITIZE).join("adopt_server");
    let mut cmd = Command::new(bin);
    cmd.arg("0");
    let program = Program::start(cmd, Duration::from_secs(30));
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &program.port.to_string()])
        .output()
        .expect("run python3 (bash .ci/setup installs websockets)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("chat ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An upgrade wshub refuses (no Sec-WebSocket-Key: 400) is logged
    // through the host's callback.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", program.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    program.sigint();
    let (status, stderr) = program.wait(Duration::from_secs(30));
    assert_clean_exit("adopt_server", status, &stderr);
    assert!(stderr.contains("[host] wshub level 2 wshub::connection::reader: conn"), "{stderr}");
}
