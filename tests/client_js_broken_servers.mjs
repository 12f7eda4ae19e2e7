// client.js (src/protocol/assets/client.js) in Node against servers that
// misbehave on purpose (tests/client_js_broken_server.mjs), one scenario per
// run. Driven by tests/client_js_survives_broken_servers.rs.
// Usage: node --experimental-websocket client_js_broken_servers.mjs SCENARIO
// Prints "ok SCENARIO" when client.js behaved as docs/clients.md says.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { envelope, startServer } from "./client_js_broken_server.mjs";

const source = readFileSync(new URL("../src/protocol/assets/client.js", import.meta.url), "utf8");
const module = { exports: {} };
new Function("module", "globalThis", source)(module, globalThis);
const WshubClient = module.exports;

const scenario = process.argv[2];
const killer = setTimeout(() => { console.error(`${scenario}: timed out`); process.exit(1); }, 40000);

// Resolves when `test()` holds, checked on every event of `client` and every
// 20 ms; rejects after `ms` with `what`.
function until(test, what, ms = 15000) {
  return new Promise((resolve, reject) => {
    const until = Date.now() + ms;
    const check = () => {
      let v;
      try { v = test(); } catch (e) { clearInterval(t); reject(e); return; }
      if (v) { clearInterval(t); resolve(v); } else if (Date.now() > until) { clearInterval(t); reject(new Error(`${scenario}: ${what} did not happen within ${ms} ms`)); }
    };
    const t = setInterval(check, 20);
    check();
  });
}

// Every event the client emits, in order, as [name, payload, at].
function record(client, names) {
  const seen = [];
  names.forEach((n) => client.on(n, (p) => seen.push([n, p, Date.now()])));
  return seen;
}
const fast = { minMs: 50, maxMs: 200 };

const scenarios = {
  // Accepts the WebSocket and never sends `connected`: the attempt is given
  // up after timeoutMs and another one made.
  async no_connected() {
    const server = await startServer(() => {});
    const c = new WshubClient(server.url, { timeoutMs: 600, backoff: fast });
    const seen = record(c, ["close", "reconnecting", "open"]);
    await server.conn(1);
    const close = seen.find(([n]) => n === "close");
    assert.ok(close && /connected/.test(close[1].reason), JSON.stringify(seen));
    assert.ok(!seen.some(([n]) => n === "open"));
    assert.ok(server.conns[0].closed || close, "the first attempt was given up");
    c.close();
    server.close();
  },

  // Acks the first join, drops the connection; the next connection never
  // answers the rejoin; the one after is normal. The publish made meanwhile
  // waits in the buffer and is acked at the end.
  async rejoin_unanswered() {
    const server = await startServer(async (conn) => {
      conn.hello();
      if (conn.index === 0) {
        const join = await conn.untilJoin();
        conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
        setTimeout(() => conn.close(1001, "going away"), 50);
      } else if (conn.index === 1) {
        await conn.next(60000); // the rejoin, unanswered; then nothing
      } else {
        await conn.serve();
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 700, backoff: fast });
    const seen = record(c, ["close", "open", "state"]);
    await c.join("r");
    await until(() => c.state !== "open", "the drop");
    const published = c.publish("r", { text: "waited" });
    await server.conn(1);
    await server.conn(2);
    assert.deepEqual(await published, { room: "r", seq: 1 });
    const closes = seen.filter(([n]) => n === "close").map(([, p]) => p.reason);
    assert.ok(closes.some((r) => /rejoin/.test(r)), JSON.stringify(closes));
    await until(() => c.state === "open", "open again");
    assert.equal(seen.filter(([n]) => n === "open").length, 2);
    c.close();
    server.close();
  },

  // Acks the join, then goes silent (reads and writes nothing, keeps TCP).
  // The client pings after heartbeatMs without a frame, gives up when the
  // ping gets no reply, and reconnects. The next server is quiet but alive:
  // its pings are answered and the client stays.
  async silent_after_join() {
    const heartbeatMs = 1000;
    let frozenAt = 0;
    const server = await startServer(async (conn) => {
      conn.hello({ heartbeatMs });
      const join = await conn.untilJoin();
      conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
      if (conn.index === 0) { frozenAt = Date.now(); conn.freeze(); } else await conn.serve();
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["close", "open"]);
    await c.join("r");
    const second = await server.conn(1);
    const close = seen.find(([n]) => n === "close");
    assert.ok(close && /ping/.test(close[1].reason), JSON.stringify(seen));
    // Never before one idle heartbeat (timers do not fire early).
    assert.ok(close[2] - frozenAt >= heartbeatMs, `gave up after ${close[2] - frozenAt} ms`);
    await until(() => c.state === "open", "open again");
    // Alive and idle: pinged at least twice, answered, still the same connection.
    await until(() => second.received.filter((m) => m.type === "ping").length >= 2, "two pings on an idle connection");
    assert.equal(server.conns.length, 2);
    assert.equal(c.state, "open");
    c.close();
    server.close();
  },

  // The server never answers the close handshake: close() still ends at once.
  async close_unanswered() {
    const server = await startServer(async (conn) => {
      conn.hello();
      const join = await conn.untilJoin();
      conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
      conn.freeze();
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["close"]);
    await c.join("r");
    const publish = c.publish("r", 1).then(() => "acked", (e) => e.code);
    c.close();
    await until(() => seen.length === 1 && c.state === "closed", "the close event");
    assert.equal(seen[0][1].code, 1000);
    assert.equal(await publish, "closed");
    await assert.rejects(c.ready.then(() => c.join("x")), (e) => e.code === "closed");
    server.close();

    // Closed while a rejoin waits for its answer: it stays closed.
    const second = await startServer(async (conn) => {
      conn.hello();
      const join = await conn.untilJoin();
      if (conn.index === 0) {
        conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
        setTimeout(() => conn.close(1001, "going away"), 50);
      }
    });
    const d = new WshubClient(second.url, { timeoutMs: 5000, backoff: fast });
    const states = record(d, ["state"]);
    await d.join("r");
    const rejoined = await second.conn(1);
    await until(() => rejoined.received.some((m) => m.type === "room:join"), "the rejoin");
    d.close();
    await d.ping(1).catch(() => {}); // a turn of the event loop
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(d.state, "closed");
    assert.deepEqual(states.map(([, p]) => p.state).slice(-2), ["connecting", "closed"]);
    second.close();
  },

  // Accepts, acks the join, closes with 1011, every time. The attempt counter
  // grows (the delays follow the schedule) instead of starting again at 1 on
  // every connection. A connection that stays up for maxMs resets it.
  async flapping_1011() {
    const backoff = { minMs: 50, maxMs: 800 };
    const server = await startServer(async (conn) => {
      conn.hello();
      const join = await conn.untilJoin();
      conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
      if (conn.index === 5) {
        // Up for longer than maxMs, then the same error.
        await new Promise((resolve) => setTimeout(resolve, backoff.maxMs + 400));
      }
      conn.close(1011, "internal");
    });
    const c = new WshubClient(server.url, { timeoutMs: 2000, backoff });
    const seen = record(c, ["reconnecting"]);
    await c.join("r");
    await server.conn(6);
    await until(() => seen.length >= 6, "six reconnecting events");
    const attempts = seen.map(([, p]) => p.attempt);
    assert.deepEqual(attempts.slice(0, 6), [1, 2, 3, 4, 5, 1], JSON.stringify(seen.map(([, p]) => p)));
    seen.forEach(([, p]) => assert.ok(p.delayMs >= 0 && p.delayMs < Math.min(backoff.maxMs, backoff.minMs * 2 ** (p.attempt - 1)), JSON.stringify(p)));
    c.close();
    server.close();
  },

  // A hostile server names events it has no right to: client.js emits only
  // the events of its fixed set, from the frames that mean them, and drops
  // messages whose seq or room are not what the protocol says.
  async hostile_types() {
    const server = await startServer(async (conn) => {
      conn.hello();
      const join = await conn.untilJoin();
      conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
      conn.send(
        envelope("open", { clientId: "evil" }),
        envelope("reconnecting", { attempt: 99, delayMs: 1 }),
        envelope("close", { code: 1000 }),
        envelope("state", { state: "closed" }),
        envelope("__proto__", {}),
        envelope("connected", { clientId: "again", protocol: 1, heartbeatMs: 30000 }),
        envelope("room:message", { room: "r", seq: "2", from: "x", data: "seq as a string" }),
        envelope("room:message", { room: "r", seq: 1.5, from: "x", data: "fractional seq" }),
        envelope("room:message", { room: 7, seq: 1, from: "x", data: "room not a string" }),
        envelope("room:message", { room: "r", seq: 1, from: "x", data: "good" }),
        envelope("room:message", { room: "r", seq: 2, from: "x", data: "good too" }),
      );
      await conn.serve({ seq: 2, epoch: "e1" });
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["open", "reconnecting", "close", "state", "connected", "room:message"]);
    assert.throws(() => c.on("room:mesage", () => {}), TypeError);
    await c.join("r");
    await until(() => seen.filter(([n]) => n === "room:message").length >= 2, "the good messages");
    await c.ping(1); // everything sent before the ping's ack was handled
    assert.deepEqual(seen.filter(([n]) => n === "room:message").map(([, p]) => p.data), ["good", "good too"]);
    assert.deepEqual(seen.filter(([n]) => n === "open").map(([, p]) => p.clientId), ["1"]);
    assert.equal(seen.filter(([n]) => n === "connected").length, 1);
    assert.ok(!seen.some(([n]) => n === "reconnecting" || n === "close"), JSON.stringify(seen));
    assert.deepEqual(seen.filter(([n]) => n === "state").map(([, p]) => p.state), ["connecting", "open"]);
    assert.equal(server.conns.length, 1);
    c.close();
    server.close();
  },

  // The join ack and a message arrive in one TCP read: the room's position
  // is the message's seq when the connection drops, so the rejoin asks from
  // there and the message is not delivered twice.
  async ack_with_message() {
    let since;
    const server = await startServer(async (conn) => {
      conn.hello();
      const join = await conn.untilJoin();
      if (conn.index === 0) {
        conn.send(
          envelope("ack", { room: "r", seq: 10, members: 1, epoch: "e1" }, join.id),
          envelope("room:message", { room: "r", seq: 11, from: "x", data: "with the ack" }),
        );
        setTimeout(() => conn.close(1001, "going away"), 100);
      } else {
        since = join.payload.since;
        // A replay from what the client asked for.
        const replay = [];
        for (let s = since + 1; s <= 11; s++) replay.push(envelope("room:message", { room: "r", seq: s, from: "x", data: "replayed " + s }));
        conn.send(...replay, envelope("ack", { room: "r", seq: 11, members: 1, epoch: "e1", recovered: true }, join.id));
        await conn.serve({ seq: 11, epoch: "e1" });
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["room:message", "open"]);
    await c.join("r");
    await server.conn(1);
    await until(() => seen.filter(([n]) => n === "open").length === 2, "the reconnection");
    assert.equal(since, 11, "the rejoin asks from the message that came with the ack");
    assert.deepEqual(seen.filter(([n]) => n === "room:message").map(([, p]) => p.seq), [11]);
    c.close();
    server.close();
  },

  // `room:left` (PROTOCOL 1.2: the server removed the client from a room):
  // reported, and that room is not rejoined after a reconnection.
  async room_left() {
    const rejoins = [];
    const server = await startServer(async (conn) => {
      conn.hello();
      if (conn.index === 0) {
        for (const room of ["kept", "gone"]) {
          const join = await conn.untilJoin();
          conn.send(envelope("ack", { room, seq: 0, members: 1, epoch: "e1" }, join.id));
        }
        conn.send(envelope("room:left", { room: "gone", reason: "kicked" }));
        setTimeout(() => conn.close(1001, "going away"), 100);
      } else {
        const join = await conn.untilJoin();
        rejoins.push(join.payload.room);
        conn.send(envelope("ack", { room: join.payload.room, seq: 0, members: 1, epoch: "e1", recovered: true }, join.id));
        await conn.serve();
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["room:left", "open"]);
    await c.join("kept");
    await c.join("gone");
    await until(() => seen.filter(([n]) => n === "open").length === 2, "the reconnection");
    await c.ping(1);
    assert.deepEqual(seen.filter(([n]) => n === "room:left").map(([, p]) => p), [{ room: "gone", reason: "kicked" }]);
    assert.deepEqual(rejoins, ["kept"]);
    assert.equal(server.conns[1].received.filter((m) => m.type === "room:join").length, 1);
    c.close();
    server.close();
  },

  // Handlers that close the client while it changes state: it stays closed.
  // close() from a "state" handler on "connecting" opens no connection; on
  // "open" it leaves no timer (no token refresh asked after close, no "open"
  // after "close"); on "reconnecting" no "reconnecting" follows. A publish
  // from a "state" handler on "open" is sent once.
  async close_from_handlers() {
    const server = await startServer((conn) => { conn.hello(); return conn.serve(); });
    const a = new WshubClient(server.url, { timeoutMs: 1000, backoff: fast });
    const aSeen = record(a, ["state", "close", "open"]);
    a.on("state", (p) => { if (p.state === "connecting") a.close(); });
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(a.state, "closed");
    assert.deepEqual(aSeen.map(([n, p]) => n === "state" ? p.state : n), ["connecting", "closed", "close"]);
    assert.equal(server.conns.length, 0, "no connection after close()");

    // A JWT that expires in 2 s: the refresh would be asked after 1 s.
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    let calls = 0;
    const b = new WshubClient(server.url, {
      timeoutMs: 1000,
      backoff: fast,
      getToken: () => { calls += 1; return b64({ alg: "none" }) + "." + b64({ exp: Math.floor(Date.now() / 1000) + 2 }) + ".x"; },
    });
    const bSeen = record(b, ["state", "close", "open"]);
    b.on("state", (p) => { if (p.state === "open") b.close(); });
    await until(() => b.state === "closed", "closed from the open handler");
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(calls, 1, "getToken asked after close()");
    assert.deepEqual(bSeen.map(([n, p]) => n === "state" ? p.state : n), ["connecting", "open", "closed", "close"]);

    const c = new WshubClient(server.url, { timeoutMs: 1000, backoff: fast });
    const cSeen = record(c, ["state", "close", "reconnecting"]);
    await c.ready;
    c.on("state", (p) => { if (p.state === "reconnecting") c.close(); });
    server.conns[server.conns.length - 1].close(1011, "internal");
    await until(() => c.state === "closed", "closed from the reconnecting handler");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(cSeen.map(([n, p]) => n === "state" ? p.state : n), ["connecting", "open", "reconnecting", "closed", "close"]);

    const d = new WshubClient(server.url, { timeoutMs: 1000, backoff: fast });
    let published;
    d.on("state", (p) => { if (p.state === "open" && !published) published = d.publish("r", "from the handler"); });
    await d.ready;
    await published;
    await d.ping(1);
    assert.equal(server.conns[server.conns.length - 1].received.filter((m) => m.type === "room:publish").length, 1);
    d.close();
    server.close();
  },

  // The server answers a rejoin with an error whose code is "closed" (or
  // "disconnected"), the words client.js uses for its own end of a
  // connection: a server error like any other (the room is dropped and
  // reported), not a reason to wait for good.
  async rejoin_error_named_like_a_drop() {
    const server = await startServer(async (conn) => {
      conn.hello();
      const join = await conn.untilJoin();
      if (conn.index === 0) {
        conn.send(envelope("ack", { room: "r", seq: 0, members: 1, epoch: "e1" }, join.id));
        setTimeout(() => conn.close(1001, "going away"), 50);
      } else {
        conn.send(envelope("error", { code: "closed", message: "named like a drop" }, join.id));
        await conn.serve();
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["error", "open"]);
    await c.join("r");
    await until(() => seen.filter(([n]) => n === "open").length === 2, "open again", 3000);
    assert.deepEqual(seen.filter(([n]) => n === "error").map(([, p]) => p.code), ["closed"]);
    assert.deepEqual([...c._rooms.keys()], []);
    c.close();
    server.close();
  },

  // The idle ping is answered with `error rate_limited` (a reply: the
  // server is alive), then the server goes silent: the next idle ping goes
  // unanswered and the connection is given up.
  async ping_answered_with_error() {
    const heartbeatMs = 300;
    const server = await startServer(async (conn) => {
      conn.hello({ heartbeatMs });
      if (conn.index > 0) return conn.serve();
      for (;;) {
        const m = await conn.next(60000);
        if (!m || m.type === "ping") {
          if (m) conn.send(envelope("error", { code: "rate_limited", message: "rate limit exceeded" }, m.id));
          break;
        }
      }
      conn.freeze();
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["close"]);
    await c.ready;
    await server.conn(1, 4000);
    assert.ok(seen.length === 1 && /ping/.test(seen[0][1].reason), JSON.stringify(seen));
    c.close();
    server.close();
  },

  // After a drop, the rejoin of one room is refused with rate_limited (as
  // wshub does past its burst: after a restart a client in many rooms joins
  // each twice). Not a refusal of the room: it is asked again, and kept.
  async rejoin_rate_limited() {
    const server = await startServer(async (conn) => {
      conn.hello();
      if (conn.index === 0) {
        for (const room of ["a", "b"]) {
          const join = await conn.untilJoin();
          conn.send(envelope("ack", { room, seq: 0, members: 1, epoch: "e1" }, join.id));
        }
        setTimeout(() => conn.close(1001, "going away"), 50);
        return;
      }
      let limited = 0;
      for (;;) {
        const m = await conn.next(60000);
        if (!m || m.close !== undefined) return;
        if (m.type === "room:join" && m.payload.room === "b" && limited < 2) {
          limited += 1;
          conn.send(envelope("error", { code: "rate_limited", message: "rate limit exceeded" }, m.id));
        } else if (m.id !== undefined) {
          conn.send(envelope("ack", { room: m.payload && m.payload.room, seq: 0, members: 1, epoch: "e1", recovered: true }, m.id));
        }
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["error", "open"]);
    await c.join("a");
    await c.join("b");
    await until(() => seen.filter(([n]) => n === "open").length === 2, "open again", 8000);
    assert.deepEqual([...c._rooms.keys()].sort(), ["a", "b"]);
    assert.deepEqual(seen.filter(([n]) => n === "error"), []);
    assert.equal(server.conns[1].received.filter((m) => m.type === "room:join" && m.payload.room === "b").length, 3);
    c.close();
    server.close();
  },

  // timeoutMs: Infinity ("no deadline"), or past 2^31 ms: timers that long
  // fire at once, so every attempt was given up after 1 ms, for good. The
  // `connected` that comes after 100 ms is waited for, and so is a ping.
  async timeout_infinity() {
    const server = await startServer(async (conn) => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      conn.hello();
      await conn.serve();
    });
    for (const timeoutMs of [Infinity, 2 ** 32]) {
      const c = new WshubClient(server.url, { timeoutMs, backoff: fast });
      const seen = record(c, ["close"]);
      await until(() => c.state === "open", `open with timeoutMs ${timeoutMs}`, 3000);
      assert.deepEqual(seen, []);
      assert.equal(await c.request("ping", 1, { timeoutMs: Infinity }), 1);
      c.close();
    }
    assert.equal(server.conns.length, 2);
    server.close();
  },

  // The application leaves a room while its rejoin is in flight: the late
  // rejoin ack does not bring the room back, and the next connection does
  // not rejoin it.
  async leave_while_rejoining() {
    let rejoining = false;
    const joins = [];
    const server = await startServer(async (conn) => {
      conn.hello();
      for (;;) {
        const m = await conn.next(20000);
        if (!m || m.close !== undefined) return;
        if (m.type === "room:join") {
          joins.push([conn.index, m.payload.room]);
          if (conn.index === 1) { rejoining = true; await new Promise((resolve) => setTimeout(resolve, 300)); }
          conn.send(envelope("ack", { room: m.payload.room, seq: 0, members: 1, epoch: "e1", recovered: true }, m.id));
          if (conn.index === 0) setTimeout(() => conn.close(1001, "going away"), 50);
        } else if (m.id !== undefined) {
          conn.send(envelope("ack", { room: m.payload && m.payload.room }, m.id));
          if (conn.index === 1 && m.type === "room:leave") setTimeout(() => conn.close(1001, "going away"), 50);
        }
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    await c.join("r");
    await until(() => rejoining, "the rejoin");
    await c.leave("r");
    await server.conn(2);
    await until(() => c.state === "open", "open on the third connection");
    await c.ping(1);
    assert.deepEqual(joins, [[0, "r"], [1, "r"]]);
    assert.deepEqual([...c._rooms.keys()], []);
    c.close();
    server.close();
  },

  // A publish larger than the server's maxMessageBytes (wshub closes such a
  // frame with 1009): rejected as too_large without sending it. Sent, it
  // was resent on every reconnection, each closed with 1009, for good, and
  // every publish behind it waited forever.
  async publish_too_large() {
    const max = 300;
    const server = await startServer(async (conn) => {
      conn.hello({ maxMessageBytes: max });
      const room = { seq: 0 };
      for (;;) {
        const m = await conn.next(60000);
        if (!m || m.close !== undefined) return;
        if (JSON.stringify(m).length > max) return conn.close(1009, "message too big");
        if (m.type === "room:join") conn.send(envelope("ack", { room: m.payload.room, seq: room.seq, members: 1, epoch: "e1" }, m.id));
        else if (m.type === "room:publish") { room.seq += 1; conn.send(envelope("ack", { room: m.payload.room, seq: room.seq }, m.id)); }
        else if (m.id !== undefined) conn.send(envelope("ack", m.payload, m.id));
      }
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: fast });
    const seen = record(c, ["close"]);
    await c.join("r");
    const big = c.publish("r", "x".repeat(2 * max)).then(() => "acked", (e) => e.code);
    const small = c.publish("r", "small").then(() => "acked", (e) => e.code);
    assert.deepEqual([await big, await small], ["too_large", "acked"]);
    await assert.rejects(c.ping("y".repeat(2 * max)), (e) => e.code === "too_large");
    assert.equal(await c.ping(1), 1);
    assert.deepEqual(seen, []);
    assert.equal(server.conns.length, 1);
    c.close();
    server.close();
  },

  // retryNow() from a "reconnecting" handler tries at once (it did nothing:
  // the retry timer was not set yet when the event came).
  async retry_now_from_handler() {
    const server = await startServer(async (conn) => {
      conn.hello();
      if (conn.index === 0) setTimeout(() => conn.close(1011, "internal"), 50);
      await conn.serve();
    });
    const c = new WshubClient(server.url, { timeoutMs: 5000, backoff: { minMs: 20000, maxMs: 30000 } });
    let after;
    c.once("reconnecting", () => { c.retryNow(); after = c.state; });
    await c.ready;
    await until(() => after !== undefined, "the reconnecting event", 2000);
    assert.equal(after, "connecting");
    await server.conn(1, 2000);
    await until(() => c.state === "open" && c.clientId === "2", "open again at once", 2000);
    c.close();
    server.close();
  },

  // A request made before the connection opens, with a payload JSON cannot
  // encode: it fails alone (bad_request); the requests that waited with it
  // are sent, and the client opens. The exception stopped the flush.
  async request_payload_not_json() {
    const server = await startServer(async (conn) => {
      await new Promise((resolve) => setTimeout(resolve, 50));
      conn.hello();
      await conn.serve();
    });
    const c = new WshubClient(server.url, { timeoutMs: 3000, backoff: fast });
    const cycle = {};
    cycle.self = cycle;
    const bad = c.request("echo", cycle).then(() => "sent", (e) => e instanceof WshubClient.WshubError && e.code);
    const ping = c.ping("after").then((p) => p, (e) => e.code);
    assert.deepEqual([await bad, await ping], ["bad_request", "after"]);
    assert.equal(c.state, "open");
    c.close();
    server.close();
  },

  // getToken's first answer ends with a newline (fetch(...).then((r) =>
  // r.text()) of an endpoint that prints one): it cannot travel as a
  // subprotocol, so the attempt fails as token_unavailable and backs off,
  // and the next answer connects; the client does not stop for good.
  async get_token_with_a_newline() {
    const server = await startServer((conn) => { conn.hello(); return conn.serve(); });
    let calls = 0;
    const c = new WshubClient(server.url, {
      timeoutMs: 1000,
      backoff: fast,
      getToken: () => { calls += 1; return calls === 1 ? "e30.e30.x\n" : "e30.e30.x"; },
    });
    const seen = record(c, ["close", "error", "open"]);
    await c.ready;
    assert.deepEqual(seen.map(([n, p]) => [n, p.code]), [["error", "token_unavailable"], ["close", 1006], ["open", undefined]]);
    assert.equal(server.conns.length, 1);
    c.close();
    server.close();
  },

  // getToken never answers the first time: the attempt is given up after
  // timeoutMs like one without `connected`, and the next one connects.
  async get_token_hangs() {
    const server = await startServer((conn) => { conn.hello(); return conn.serve(); });
    let calls = 0;
    const c = new WshubClient(server.url, {
      timeoutMs: 600,
      backoff: fast,
      getToken: () => { calls += 1; return calls === 1 ? new Promise(() => {}) : "t"; },
    });
    const seen = record(c, ["close", "error", "open"]);
    await c.ready;
    assert.deepEqual(seen.map(([n, p]) => [n, p.code]), [["error", "token_unavailable"], ["close", 1006], ["open", undefined]]);
    assert.equal(calls, 2);
    assert.equal(server.conns.length, 1);
    c.close();
    server.close();
  },
};

if (!scenarios[scenario]) { console.error(`unknown scenario ${scenario}`); process.exit(2); }
try {
  await scenarios[scenario]();
  console.log(`ok ${scenario}`);
} catch (e) {
  console.error(e);
  process.exitCode = 1;
}
clearTimeout(killer);
process.exit(process.exitCode ?? 0);
