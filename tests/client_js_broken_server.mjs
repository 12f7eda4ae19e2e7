// A WebSocket server written to misbehave, for tests/client_js_broken_servers.mjs:
// RFC 6455 framing by hand on node:http's `upgrade` (unfragmented frames,
// enough for client.js), and the few wshub replies a client needs. Each
// scenario decides, per connection, what the server does.
import { createServer } from "node:http";
import { createHash } from "node:crypto";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// One unmasked server frame (FIN set).
export function frame(opcode, payload) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  let head;
  if (body.length < 126) head = Buffer.from([0x80 | opcode, body.length]);
  else if (body.length < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode; head[1] = 126; head.writeUInt16BE(body.length, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode; head[1] = 127; head.writeBigUInt64BE(BigInt(body.length), 2);
  }
  return Buffer.concat([head, body]);
}

export function envelope(type, payload, id) {
  const env = { type, ts: Date.now(), payload: payload ?? null };
  if (id !== undefined) env.id = id;
  return env;
}

// One accepted WebSocket connection.
export class Conn {
  constructor(socket, index) {
    this.socket = socket;
    this.index = index;
    this.openedAt = Date.now();
    this.closed = false;
    this.received = []; // every client message, parsed, in order
    this._buf = Buffer.alloc(0);
    this._queue = [];
    this._waiters = [];
    socket.on("data", (d) => this._data(d));
    socket.on("close", () => { this.closed = true; this._wake(); });
    socket.on("error", () => {});
  }

  _wake() {
    while (this._waiters.length && (this._queue.length || this.closed)) this._waiters.shift()(this._queue.shift() ?? null);
  }

  _data(d) {
    this._buf = Buffer.concat([this._buf, d]);
    for (;;) {
      const b = this._buf;
      if (b.length < 2) return;
      const opcode = b[0] & 0x0f;
      let len = b[1] & 0x7f, off = 2;
      if (len === 126) { if (b.length < 4) return; len = b.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (b.length < 10) return; len = Number(b.readBigUInt64BE(2)); off = 10; }
      const masked = (b[1] & 0x80) !== 0;
      const need = off + (masked ? 4 : 0) + len;
      if (b.length < need) return;
      const body = Buffer.from(b.subarray(off + (masked ? 4 : 0), need));
      if (masked) for (let i = 0; i < body.length; i++) body[i] ^= b[off + (i & 3)];
      this._buf = b.subarray(need);
      let msg;
      if (opcode === 1) { try { msg = JSON.parse(body.toString()); } catch { msg = { unparsed: body.toString() }; } }
      else if (opcode === 2) msg = { binary: body };
      else if (opcode === 8) msg = { close: body.length >= 2 ? body.readUInt16BE(0) : 1005 };
      else if (opcode === 9) { this.write(frame(10, body)); continue; }
      else continue;
      this.received.push(msg);
      this._queue.push(msg);
      this._wake();
    }
  }

  // The next client message, or null once the connection is gone or after `ms`.
  next(ms = 20000) {
    if (this._queue.length || this.closed) return Promise.resolve(this._queue.shift() ?? null);
    return new Promise((resolve) => {
      const w = (m) => { clearTimeout(t); resolve(m); };
      const t = setTimeout(() => { const i = this._waiters.indexOf(w); if (i >= 0) this._waiters.splice(i, 1); resolve(null); }, ms);
      this._waiters.push(w);
    });
  }

  write(bytes) { if (!this.closed) this.socket.write(bytes); }
  // Several envelopes in one write: they reach the client in one TCP read.
  send(...envs) { this.write(Buffer.concat(envs.map((e) => frame(1, JSON.stringify(e))))); }
  hello(extra = {}) {
    this.send(envelope("connected", { clientId: String(this.index + 1), protocol: 1, heartbeatMs: 30000, maxMessageBytes: 1048576, ...extra }));
  }
  close(code, reason = "") {
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2);
    this.write(frame(8, body));
    this.socket.end();
  }
  // Stops reading and writing, keeping the TCP connection: a stalled server.
  freeze() { this.socket.pause(); }

  // Answers like wshub until the client goes (acks joins, pings, publishes).
  async serve(room = { seq: 0, epoch: "e1" }) {
    for (;;) {
      const m = await this.next(60000);
      if (!m || m.close !== undefined) return;
      if (m.id === undefined) continue;
      const p = m.payload || {};
      if (m.type === "room:join") this.send(envelope("ack", { room: p.room, seq: room.seq, members: 1, epoch: room.epoch, recovered: p.since !== undefined ? true : undefined }, m.id));
      else if (m.type === "room:publish") { room.seq += 1; this.send(envelope("ack", { room: p.room, seq: room.seq }, m.id)); }
      else if (m.type === "ping") this.send(envelope("ack", p, m.id));
      else this.send(envelope("ack", { room: p.room }, m.id));
    }
  }

  // Reads until the client's room:join, answers nothing else meanwhile.
  async untilJoin() {
    for (;;) {
      const m = await this.next();
      if (!m) throw new Error(`connection ${this.index} ended before a room:join`);
      if (m.type === "room:join") return m;
    }
  }
}

// Listens on 127.0.0.1 port 0; `behave(conn)` runs for every connection.
export async function startServer(behave) {
  const conns = [];
  const waiters = [];
  const server = createServer((_, res) => { res.writeHead(404); res.end(); });
  server.on("upgrade", (req, socket) => {
    const accept = createHash("sha1").update(req.headers["sec-websocket-key"] + GUID).digest("base64");
    const offered = String(req.headers["sec-websocket-protocol"] || "").split(",").map((s) => s.trim());
    socket.setNoDelay(true);
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n` + (offered.includes("wshub.v1.json") ? "Sec-WebSocket-Protocol: wshub.v1.json\r\n" : "") + "\r\n");
    const conn = new Conn(socket, conns.length);
    conns.push(conn);
    waiters.splice(0).forEach((w) => w());
    Promise.resolve(behave(conn)).catch((e) => { console.error(`connection ${conn.index}:`, e); process.exitCode = 1; });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    conns,
    // Resolves with connection `n` (0-based) once it is accepted; rejects after `ms`.
    async conn(n, ms = 20000) {
      const until = Date.now() + ms;
      while (conns.length <= n) {
        if (Date.now() > until) throw new Error(`connection ${n} never came (${conns.length} so far)`);
        await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 200); });
      }
      return conns[n];
    },
    close() { server.close(); conns.forEach((c) => c.socket.destroy()); },
  };
}
