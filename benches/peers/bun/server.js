// Comparison peer for wshub's benchmarks on Bun.serve (uWebSockets inside):
// the same subset of wshub's wire protocol v1 as benches/peers/node-ws
// (checked alike by benches/peers/check.py), written the way Bun's docs write
// a room server: a room is a topic, `ws.subscribe(room)` joins it, and a
// publish is one `publish` call that uWebSockets corks per subscriber
// (`ws.publish` skips the sender; `server.publish` with echo includes it).
// No history or recovery, no presence, typing, binary frames, rate limit or auth.
//
//   bun server.js --port 0     # prints "listening on 127.0.0.1:PORT"
//   bun server.js --port 0 --tls-cert cert.pem --tls-key key.pem   # wss://
//   bun server.js --port 0 --deflate   # accept permessage-deflate (Bun's perMessageDeflate: true)
//
// Speaks, as PROTOCOL.md: `connected` first; `room:join {room}` -> ack
// {room, seq, members}; `room:leave {room}` -> ack {room}; `room:publish
// {room, data, echo?}` -> `room:message {room, seq, from, data}` to the other
// members (the sender too with echo), ack {room, seq}; `ping` -> ack echoing
// the payload; anything else -> `error {code, message}`.
'use strict';

const HEARTBEAT_MS = 30000;
const MAX_MESSAGE_BYTES = 1048576;
const MAX_ID_LEN = 64;
const MAX_ROOM_LEN = 128;

function parseArgs(argv) {
  let port = 9002;
  let tlsCert = null;
  let tlsKey = null;
  let deflate = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--tls-cert' && i + 1 < argv.length) {
      tlsCert = argv[++i];
    } else if (argv[i] === '--tls-key' && i + 1 < argv.length) {
      tlsKey = argv[++i];
    } else if (argv[i] === '--port' && i + 1 < argv.length) {
      port = Number(argv[++i]);
    } else if (argv[i] === '--deflate') {
      deflate = true;
    } else {
      console.error(`usage: bun server.js [--port N] [--tls-cert PEM --tls-key PEM] [--deflate]   (unknown argument ${argv[i]})`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error('--port must be 0..65535');
    process.exit(2);
  }
  if ((tlsCert === null) !== (tlsKey === null)) {
    console.error('--tls-cert and --tls-key go together');
    process.exit(2);
  }
  return { port, tlsCert, tlsKey, deflate };
}

const rooms = new Map(); // room name -> { seq, members: number }
const open = new Set(); // every open ws, for the close 1001 at stop
let nextClientId = 1;
// --deflate: publishes go compressed to the connections that agreed to it.
let compress = false;

function frame(type, id, payload) {
  const out = { type };
  if (id !== undefined) out.id = id;
  out.ts = Date.now();
  out.payload = payload;
  return JSON.stringify(out);
}

class ProtocolError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function sendError(ws, id, code, message) {
  ws.send(frame('error', id, { code, message }));
}

function roomName(payload) {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new ProtocolError('bad_request', 'payload must be an object');
  }
  const room = payload.room;
  if (room === undefined) throw new ProtocolError('bad_request', 'missing room');
  if (typeof room !== 'string') throw new ProtocolError('bad_request', 'room must be a string');
  if (Buffer.byteLength(room) > MAX_ROOM_LEN) {
    throw new ProtocolError('too_large', `room name is longer than ${MAX_ROOM_LEN} bytes`);
  }
  // eslint-disable-next-line no-control-regex
  if (room.length === 0 || /[\u0000-\u001f\u007f-\u009f]/.test(room)) {
    throw new ProtocolError('bad_request', 'room names are 1 to 128 bytes of UTF-8 without control characters');
  }
  return room;
}

function leaveRoom(ws, name) {
  ws.data.rooms.delete(name);
  ws.unsubscribe(name);
  const room = rooms.get(name);
  if (!room) return;
  room.members -= 1;
  if (room.members === 0) rooms.delete(name);
}

// Handles one request; returns the ack payload, or undefined for none.
function handle(server, ws, type, payload) {
  const client = ws.data;
  switch (type) {
    case 'ping':
      return payload === undefined ? null : payload;

    case 'room:join': {
      const name = roomName(payload);
      let room = rooms.get(name);
      if (!room) {
        room = { seq: 0, members: 0 };
        rooms.set(name, room);
      }
      if (!client.rooms.has(name)) {
        client.rooms.add(name);
        ws.subscribe(name);
        room.members += 1;
      }
      return { room: name, seq: room.seq, members: room.members };
    }

    case 'room:leave': {
      const name = roomName(payload);
      if (!client.rooms.has(name)) throw new ProtocolError('not_found', `not in room ${JSON.stringify(name)}`);
      leaveRoom(ws, name);
      return { room: name };
    }

    case 'room:publish': {
      const name = roomName(payload);
      if (!('data' in payload)) throw new ProtocolError('bad_request', 'room:publish needs data');
      const echo = payload.echo === undefined || payload.echo === null ? false : payload.echo;
      if (typeof echo !== 'boolean') throw new ProtocolError('bad_request', 'echo must be a boolean');
      if (!client.rooms.has(name)) throw new ProtocolError('forbidden', `join ${JSON.stringify(name)} first`);
      const room = rooms.get(name);
      const seq = ++room.seq;
      const str = frame('room:message', undefined, { room: name, seq, from: client.id, data: payload.data });
      // The last argument asks for compression; Bun sends uncompressed without it.
      if (echo) server.publish(name, str, compress);
      else ws.publish(name, str, compress);
      return { room: name, seq };
    }

    default:
      throw new ProtocolError('unknown_type', `unknown type ${JSON.stringify(String(type).slice(0, 64))}`);
  }
}

function onMessage(server, ws, data) {
  if (typeof data !== 'string') {
    sendError(ws, undefined, 'bad_request', 'binary frames are not supported by this peer');
    return;
  }
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (e) {
    sendError(ws, undefined, 'bad_request', `malformed JSON: ${e.message}`);
    return;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    sendError(ws, undefined, 'bad_request', 'the envelope must be a JSON object');
    return;
  }
  let id = msg.id;
  if (id === null) id = undefined;
  if (id !== undefined && typeof id !== 'string') {
    sendError(ws, undefined, 'bad_request', 'id must be a string');
    return;
  }
  if (id !== undefined && Buffer.byteLength(id) > MAX_ID_LEN) {
    sendError(ws, undefined, 'too_large', `id is longer than ${MAX_ID_LEN} bytes`);
    return;
  }
  if (msg.type === undefined) {
    sendError(ws, id, 'bad_request', 'missing type');
    return;
  }
  if (typeof msg.type !== 'string') {
    sendError(ws, id, 'bad_request', 'type must be a string');
    return;
  }
  try {
    const ackPayload = handle(server, ws, msg.type, msg.payload);
    if (id !== undefined && ackPayload !== undefined) ws.send(frame('ack', id, ackPayload));
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    sendError(ws, id, e.code, e.message);
  }
}

function main() {
  const { port, tlsCert, tlsKey, deflate } = parseArgs(process.argv.slice(2));
  compress = deflate;
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port,
    tls: tlsCert === null ? undefined : { cert: Bun.file(tlsCert), key: Bun.file(tlsKey) },
    fetch(req, srv) {
      if (new URL(req.url).pathname !== '/ws') return new Response('not found\n', { status: 404 });
      if (srv.upgrade(req, { data: { id: String(nextClientId++), rooms: new Set() } })) return undefined;
      return new Response('upgrade required\n', { status: 426 });
    },
    websocket: {
      maxPayloadLength: MAX_MESSAGE_BYTES,
      // uWebSockets' heartbeat: a ping when a connection has been quiet, a
      // close when it stays quiet for the whole timeout (seconds).
      idleTimeout: (2 * HEARTBEAT_MS) / 1000,
      sendPings: true,
      perMessageDeflate: deflate,
      publishToSelf: false,
      open(ws) {
        open.add(ws);
        ws.send(
          frame('connected', undefined, {
            clientId: ws.data.id,
            protocol: 1,
            heartbeatMs: HEARTBEAT_MS,
            maxMessageBytes: MAX_MESSAGE_BYTES,
          }),
        );
      },
      message(ws, data) {
        onMessage(server, ws, data);
      },
      close(ws) {
        open.delete(ws);
        for (const name of ws.data.rooms) {
          const room = rooms.get(name);
          if (room && --room.members === 0) rooms.delete(name);
        }
        ws.data.rooms.clear();
      },
    },
  });

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const ws of open) ws.close(1001, 'server shutting down');
    // Do not wait long for slow clients: close 1001 is sent, then exit.
    setTimeout(() => process.exit(0), 1000);
    server.stop(false).then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  process.stdout.write(`listening on 127.0.0.1:${server.port}\n`);
}

main();
