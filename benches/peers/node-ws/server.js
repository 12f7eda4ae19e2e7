#!/usr/bin/env node
// Comparison peer for wshub's benchmarks: the part of wshub's wire protocol v1
// that the load generator uses, written on Node's `ws` the way its users
// usually write a room server (a Map of clients, a Map of rooms to Sets of
// clients, JSON.stringify once per broadcast, ws.send(str) to each member).
// It is not a second implementation of wshub: no history or recovery, no
// presence, typing, binary frames, rate limit or auth.
//
//   node server.js --port 0     # prints "listening on 127.0.0.1:PORT"
//   node server.js --port 0 --tls-cert cert.pem --tls-key key.pem   # wss:// (https)
//   node server.js --port 0 --deflate   # accept permessage-deflate (ws's perMessageDeflate: true)
//
// Speaks, as PROTOCOL.md: `connected` first; `room:join {room}` -> ack
// {room, seq, members}; `room:leave {room}` -> ack {room}; `room:publish
// {room, data, echo?}` -> `room:message {room, seq, from, data}` to the other
// members (the sender too with echo), ack {room, seq}; `ping` -> ack echoing
// the payload; anything else -> `error {code, message}`.
'use strict';

const http = require('http');
const https = require('https');
const fs = require('fs');
const { WebSocketServer, WebSocket } = require('ws');

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
    } else if (argv[i].startsWith('--port=')) {
      port = Number(argv[i].slice('--port='.length));
    } else {
      console.error(`usage: node server.js [--port N] [--tls-cert PEM --tls-key PEM] [--deflate]   (unknown argument ${argv[i]})`);
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

const clients = new Map(); // ws -> { id, rooms: Set<string> }
const rooms = new Map(); // room name -> { seq, members: Set<ws> }
let nextClientId = 1;

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

// Handles one request; returns the ack payload, or undefined for none.
function handle(ws, client, type, payload) {
  switch (type) {
    case 'ping':
      return payload === undefined ? null : payload;

    case 'room:join': {
      const name = roomName(payload);
      let room = rooms.get(name);
      if (!room) {
        room = { seq: 0, members: new Set() };
        rooms.set(name, room);
      }
      room.members.add(ws);
      client.rooms.add(name);
      return { room: name, seq: room.seq, members: room.members.size };
    }

    case 'room:leave': {
      const name = roomName(payload);
      if (!client.rooms.has(name)) throw new ProtocolError('not_found', `not in room ${JSON.stringify(name)}`);
      leaveRoom(ws, client, name);
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
      for (const member of room.members) {
        if (member === ws && !echo) continue;
        if (member.readyState === WebSocket.OPEN) member.send(str);
      }
      return { room: name, seq };
    }

    default:
      throw new ProtocolError('unknown_type', `unknown type ${JSON.stringify(String(type).slice(0, 64))}`);
  }
}

function leaveRoom(ws, client, name) {
  client.rooms.delete(name);
  const room = rooms.get(name);
  if (!room) return;
  room.members.delete(ws);
  if (room.members.size === 0) rooms.delete(name);
}

function onMessage(ws, client, data, isBinary) {
  if (isBinary) {
    sendError(ws, undefined, 'bad_request', 'binary frames are not supported by this peer');
    return;
  }
  let msg;
  try {
    msg = JSON.parse(data.toString());
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
    const ackPayload = handle(ws, client, msg.type, msg.payload);
    if (id !== undefined && ackPayload !== undefined) ws.send(frame('ack', id, ackPayload));
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    sendError(ws, id, e.code, e.message);
  }
}

function main() {
  const { port, tlsCert, tlsKey, deflate } = parseArgs(process.argv.slice(2));
  const onRequest = (req, res) => {
    res.writeHead(req.url === '/ws' ? 426 : 404, { 'Content-Type': 'text/plain' });
    res.end(req.url === '/ws' ? 'upgrade required\n' : 'not found\n');
  };
  // With TLS: Node's https server (OpenSSL), TLS 1.2 and 1.3, ALPN http/1.1, as wshub.
  const server = tlsCert === null
    ? http.createServer(onRequest)
    : https.createServer({ cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey), ALPNProtocols: ['http/1.1'] }, onRequest);
  const wss = new WebSocketServer({ server, path: '/ws', maxPayload: MAX_MESSAGE_BYTES, clientTracking: false,
    perMessageDeflate: deflate });

  wss.on('connection', (ws) => {
    const client = { id: String(nextClientId++), rooms: new Set() };
    clients.set(ws, client);
    ws.isAlive = true;
    ws.on('pong', () => {
      ws.isAlive = true;
    });
    ws.on('message', (data, isBinary) => onMessage(ws, client, data, isBinary));
    ws.on('error', () => {}); // the close event that follows cleans up
    ws.on('close', () => {
      for (const name of client.rooms) leaveRoom(ws, client, name);
      clients.delete(ws);
    });
    ws.send(
      frame('connected', undefined, {
        clientId: client.id,
        protocol: 1,
        heartbeatMs: HEARTBEAT_MS,
        maxMessageBytes: MAX_MESSAGE_BYTES,
      }),
    );
  });

  // The usual ws heartbeat: ping everyone each interval, terminate whoever
  // did not pong since the last one.
  const heartbeat = setInterval(() => {
    for (const ws of clients.keys()) {
      if (!ws.isAlive) {
        ws.terminate();
        continue;
      }
      ws.isAlive = false;
      ws.ping();
    }
  }, HEARTBEAT_MS);

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    clearInterval(heartbeat);
    for (const ws of clients.keys()) ws.close(1001, 'server shutting down');
    server.close();
    wss.close();
    // Do not wait long for slow clients: close 1001 is sent, then exit.
    setTimeout(() => process.exit(0), 1000).unref();
    server.on('close', () => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  server.listen(port, '127.0.0.1', () => {
    const addr = server.address();
    process.stdout.write(`listening on 127.0.0.1:${addr.port}\n`);
  });
}

main();
