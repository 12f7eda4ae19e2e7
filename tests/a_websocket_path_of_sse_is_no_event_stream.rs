//! With the WebSocket path set to `/sse` (`--path /sse`), an upgrade there
//! is a WebSocket, not an event stream: it does not go through a stream's
//! join checks (here, a full `max_members` room named in its query would
//! refuse it with 403), and it keeps nothing a stream keeps until it opens.

mod protocol_common;

use std::net::TcpStream;

use protocol_common::{Client, Wshub, WAIT};
use serde_json::json;

fn websocket(server: &Wshub, query: &str) -> Result<Client, String> {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/sse{query}",
        server.addr
    ))
    .expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "wshub.v1.json".parse().unwrap());
    let (ws, _) = tungstenite::client::client(request, stream).map_err(|e| e.to_string())?;
    let mut client = Client::from_parts(ws, Some("wshub.v1.json".into()));
    assert_eq!(client.json()["type"], "connected");
    Ok(client)
}

#[test]
fn an_upgrade_on_a_websocket_path_named_sse_is_a_websocket() {
    let config = std::env::temp_dir().join(format!("wshub-ws-path-sse-{}.toml", std::process::id()));
    std::fs::write(&config, "[[namespace]]\nprefix = \"full:\"\nmax_members = 1\n").unwrap();
    let server = Wshub::start(&["--path", "/sse", "--config", config.to_str().unwrap()]);
    let mut member = websocket(&server, "").expect("a plain upgrade");
    member.join("full:x");
    let mut other = websocket(&server, "?room=full:x").expect("an upgrade whose query names a full room");
    let refused = other.request("room:join", json!({"room": "full:x"}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    let _ = std::fs::remove_file(config);
}
