// wshub browser client for wire protocol v1 (docs/protocol.md). No dependencies,
// no build step. It survives the network: the reconnect policy (backoff with
// full jitter, rejoin with since+epoch, keyed resends, the offline buffer, when
// it stops) is docs/clients.md, the same as the Rust client wshub::client.
//
//   const c = new WshubClient("ws://" + location.host + "/ws",
//     { token, backoff: { minMs: 1000, maxMs: 30000 }, maxBuffered: 100, timeoutMs: 5000 });
//   c.on("open", (p) => console.log("I am", p.clientId));      // every (re)connection
//   c.on("room:message", (p) => console.log(p.room, p.seq, p.from, p.data));
//   c.on("reconnecting", (p) => console.log("retry", p.attempt, "in", p.delayMs, "ms"));
//   c.on("recovery", (p) => refetch(p.room));                   // history could not be replayed
//   await c.join("lobby");
//   await c.publish("lobby", { text: "hi" });                   // buffered while offline
//
// Requests return Promises resolved with the ack's payload, rejected with
// {code, message}: a server error code, or "timeout", "buffer_full",
// "disconnected" (the connection dropped before the reply; publishes are
// resent instead), "closed".
(function (global) {
  "use strict";

  // The reconnect delay: full jitter over min(maxMs, minMs * 2^(attempt-1)).
  // A pure function of the attempt (1 for the first retry) and a draw in [0, 1).
  function backoffDelay(backoff, attempt, draw) {
    var cap = Math.min(backoff.maxMs, backoff.minMs * Math.pow(2, Math.max(0, Math.min(attempt - 1, 30))));
    var d = typeof draw === "number" && draw >= 0 ? Math.min(draw, 1) : 0;
    return Math.floor(d * cap);
  }

  function opt(v, dflt) { return v === undefined || v === null ? dflt : v; }

  function WshubClient(url, options) {
    options = options || {};
    var b = options.backoff || {};
    this.url = url;
    this.token = options.token || null;
    this.backoff = { minMs: opt(b.minMs, 1000), maxMs: opt(b.maxMs, 30000) };
    this.maxBuffered = opt(options.maxBuffered, 100);
    this.timeoutMs = opt(options.timeoutMs, 5000);
    this.clientId = null;
    this.hello = null; // the last `connected` payload
    // "connecting", "open" (rooms rejoined), "reconnecting" (waiting), "closed" (for good).
    this.state = "connecting";
    this.nextAttemptAt = null; // while "reconnecting": when the next attempt starts (ms since epoch)
    this.ws = null;
    this._rooms = new Map();     // room -> {seq, epoch}: rejoined on every reconnection
    this._outbox = [];           // unacknowledged publishes, in order
    this._pending = new Map();   // id -> {resolve, reject, timer} for other requests
    this._waiting = [];          // requests made offline, sent once open
    this._resync = new Map();    // room -> {previousEpoch, held: Map seq -> [type, payload]}
    this._handlers = new Map();
    this._nextId = 0;
    this._attempt = 0;
    this._rejoining = 0;
    this._retryTimer = null;
    this._stopped = false;
    this._everOpen = false;
    this._keyPrefix = Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    var self = this;
    this.ready = new Promise(function (resolve, reject) { self._resolveReady = resolve; self._rejectReady = reject; });
    this.ready.catch(function () {});
    this._connect();
  }

  WshubClient.backoffDelay = backoffDelay;

  // Registers handler(payload, envelope). Events: "open" {clientId}, "close"
  // {code, reason}, "reconnecting" {attempt, delayMs}, "room:message" {room,
  // seq, from, data}, "binary" {room, seq, body: Uint8Array}, "presence" {room,
  // clientId, user, joined} (also as "presence:join"/"presence:leave"),
  // "typing" {room, clientId, active}, "recovery" {room, recovered, epoch,
  // previousEpoch}, "room:left" {room, reason} (the server removed us: the
  // room is not rejoined), "error" {code, message}, "connected" (the raw
  // first frame).
  WshubClient.prototype.on = function (type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, []);
    this._handlers.get(type).push(handler);
    return this;
  };

  WshubClient.prototype._emit = function (type, payload, envelope) {
    (this._handlers.get(type) || []).forEach(function (h) {
      try { h(payload, envelope); } catch (e) { setTimeout(function () { throw e; }); }
    });
  };

  WshubClient.prototype._connect = function () {
    var self = this;
    this._retryTimer = null;
    this.nextAttemptAt = null;
    this.state = "connecting";
    // A browser cannot set headers: the token travels as a subprotocol entry,
    // next to wshub.v1.json (which the server echoes).
    var protocols = ["wshub.v1.json"];
    if (this.token) protocols.push("bearer." + this.token);
    var ws;
    try { ws = new WebSocket(this.url, protocols); } catch (e) {
      this._emit("error", { code: "bad_url", message: String(e && e.message || e) });
      this._finish("bad url");
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = function (ev) { if (self.ws === ws) self._onFrame(ev.data); };
    ws.onclose = function (ev) { if (self.ws === ws) self._onClose(ev.code, ev.reason); };
  };

  WshubClient.prototype._send = function (obj) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(typeof obj === "string" || obj instanceof Uint8Array ? obj : JSON.stringify(obj));
  };

  WshubClient.prototype._onClose = function (code, reason) {
    var self = this;
    this.ws = null;
    var wasOpen = this.state === "open";
    this.state = "reconnecting";
    this._resync.clear();
    this._pending.forEach(function (p) { clearTimeout(p.timer); p.reject({ code: "disconnected", message: "the connection dropped before the reply" }); });
    this._pending.clear();
    // Sent publishes wait again: resent with the same key after the rejoin.
    this._outbox.forEach(function (o) { clearTimeout(o.timer); o.timer = null; });
    // Decide first, so that a "close" handler sees state "closed" when it is final.
    var stop = null;
    if (this._stopped) stop = "closed by the application";
    else if (code === 1000) stop = "the server closed normally (1000)";
    else if (code === 1008 && reason === "token expired") {
      this._emit("error", { code: "token_expired", message: "the session's token expired; not reconnecting with it (call setToken before exp)" });
      stop = "token expired";
    } else if (code === 4003) {
      this._emit("error", { code: "banned", message: "the server closed this user's connections (4003): not reconnecting" });
      stop = "banned";
    }
    if (stop) this._finish(stop);
    this._emit("close", { code: code, reason: reason, wasOpen: wasOpen });
    if (stop) return;
    this._attempt += 1;
    var delay = backoffDelay(this.backoff, this._attempt, Math.random());
    this.nextAttemptAt = Date.now() + delay;
    this._emit("reconnecting", { attempt: this._attempt, delayMs: delay });
    if (this._stopped) return;
    this._retryTimer = setTimeout(function () { self._connect(); }, delay);
  };

  // Stops for good: everything waiting is rejected with "closed".
  WshubClient.prototype._finish = function (why) {
    var closed = { code: "closed", message: "the client is closed: " + why };
    this.state = "closed";
    this.nextAttemptAt = null;
    this._outbox.forEach(function (o) { clearTimeout(o.timer); o.reject(closed); });
    this._outbox = [];
    this._waiting.forEach(function (w) { clearTimeout(w.timer); w.reject(closed); });
    this._waiting = [];
    this._rejectReady(new Error(closed.message));
  };

  // Tries now instead of waiting out the current delay.
  WshubClient.prototype.retryNow = function () {
    if (this.state !== "reconnecting" || !this._retryTimer) return;
    clearTimeout(this._retryTimer);
    this._connect();
  };

  WshubClient.prototype._rejoin = function (room, payload, resync) {
    var self = this;
    var id = "j-" + (++this._nextId);
    this._pending.set(id, {
      timer: null,
      resolve: function (ack) { self._onRejoin(room, resync, ack); },
      reject: function (err) {
        if (err.code === "disconnected") return;
        self._rooms.delete(room);
        self._resync.delete(room);
        self._emit("error", { code: err.code, message: "rejoining " + room + ": " + err.message });
        self._rejoinDone();
      }
    });
    this._send({ type: "room:join", id: id, payload: payload });
  };

  WshubClient.prototype._onRejoin = function (room, resync, ack) {
    var self = this;
    var before = this._rooms.get(room) || { seq: 0, epoch: null };
    if (resync) {
      var r = this._resync.get(room);
      this._resync.delete(room);
      var last = ack.seq;
      this._emit("recovery", { room: room, recovered: false, epoch: ack.epoch, previousEpoch: r ? r.previousEpoch : null });
      if (r) {
        Array.from(r.held.keys()).sort(function (a, b) { return a - b; }).forEach(function (seq) {
          last = Math.max(last, seq);
          var m = r.held.get(seq);
          self._emit(m[0], m[1]);
        });
      }
      this._rooms.set(room, { seq: last, epoch: ack.epoch });
    } else if (before.epoch && ack.epoch && before.epoch !== ack.epoch) {
      // The room was reset (server restart): read its new epoch from seq 1.
      this._rooms.set(room, { seq: 0, epoch: ack.epoch });
      this._resync.set(room, { previousEpoch: before.epoch, held: new Map() });
      this._rejoin(room, { room: room, since: 0, epoch: ack.epoch }, true);
      return;
    } else {
      this._rooms.set(room, { seq: ack.seq, epoch: ack.epoch });
      if (ack.recovered === false) this._emit("recovery", { room: room, recovered: false, epoch: ack.epoch, previousEpoch: before.epoch });
    }
    this._rejoinDone();
  };

  WshubClient.prototype._rejoinDone = function () {
    this._rejoining -= 1;
    if (this._rejoining === 0) this._goOnline();
  };

  // Every room rejoined: send what waited, in order, then say "open".
  WshubClient.prototype._goOnline = function () {
    var self = this;
    this.state = "open";
    this._attempt = 0;
    this._everOpen = true;
    this._outbox.forEach(function (o) { self._sendPublish(o); });
    var waiting = this._waiting;
    this._waiting = [];
    waiting.forEach(function (w) { clearTimeout(w.timer); w.go(); });
    this._resolveReady(this.hello); // the `connected` payload
    this._emit("open", { clientId: this.clientId });
  };

  WshubClient.prototype._sendPublish = function (o) {
    var self = this;
    clearTimeout(o.timer);
    o.timer = setTimeout(function () {
      var i = self._outbox.indexOf(o);
      if (i >= 0) self._outbox.splice(i, 1);
      o.reject({ code: "timeout", message: "publish got no ack" });
    }, this.timeoutMs);
    this._send(o.frame);
  };

  // Emits a room's message once: held while the room resynchronises, dropped
  // when its seq was already seen.
  WshubClient.prototype._deliver = function (type, p) {
    var r = this._resync.get(p.room);
    if (r) { if (r.held.size < 4096 || r.held.has(p.seq)) r.held.set(p.seq, [type, p]); return; }
    var pos = this._rooms.get(p.room);
    if (pos) {
      if (p.seq <= pos.seq) return;
      pos.seq = p.seq;
    }
    this._emit(type, p);
  };

  WshubClient.prototype._onFrame = function (data) {
    var self = this;
    if (typeof data !== "string") {
      var b = new Uint8Array(data);
      if (b.length < 11 || b[0] !== 0x02) return;
      var roomLen = (b[1] << 8) | b[2];
      if (b.length < 11 + roomLen) return;
      var room = new TextDecoder().decode(b.subarray(3, 3 + roomLen));
      var view = new DataView(data, 3 + roomLen, 8);
      var seq = view.getUint32(0) * 4294967296 + view.getUint32(4);
      this._deliver("binary", { room: room, seq: seq, body: b.subarray(11 + roomLen) });
      return;
    }
    var env;
    try { env = JSON.parse(data); } catch (e) { return; }
    var p = env.payload;
    if (env.type === "connected") {
      this.clientId = p.clientId;
      this.hello = p;
      this._emit("connected", p, env);
      this._rejoining = 1; // held until every rejoin is sent
      this._rooms.forEach(function (pos, room) {
        self._rejoining += 1;
        var payload = { room: room, since: pos.seq };
        if (pos.epoch) payload.epoch = pos.epoch;
        self._rejoin(room, payload, false);
      });
      this._rejoinDone();
      return;
    }
    if ((env.type === "ack" || env.type === "error") && env.id !== undefined) {
      var pending = this._pending.get(env.id);
      if (pending) {
        this._pending.delete(env.id);
        clearTimeout(pending.timer);
        if (env.type === "ack") pending.resolve(p); else pending.reject(p);
        return;
      }
      for (var i = 0; i < this._outbox.length; i++) {
        var o = this._outbox[i];
        if (o.id === env.id) {
          this._outbox.splice(i, 1);
          clearTimeout(o.timer);
          if (env.type === "ack") o.resolve(p); else o.reject(p);
          return;
        }
      }
    }
    switch (env.type) {
      case "room:message": this._deliver("room:message", p); return;
      case "presence:join":
      case "presence:leave":
        this._emit(env.type, p, env);
        this._emit("presence", { room: p.room, clientId: p.clientId, user: p.user, joined: env.type === "presence:join" }, env);
        return;
      case "room:left":
        this._rooms.delete(p.room);
        this._emit(env.type, p, env);
        return;
      default: this._emit(env.type, p, env);
    }
  };

  // Sends {type, id, payload}; resolves with the ack's payload. Offline, it
  // waits for the connection (within the timeout).
  WshubClient.prototype.request = function (type, payload, opts) {
    var self = this;
    var timeoutMs = opts && opts.timeoutMs !== undefined ? opts.timeoutMs : this.timeoutMs;
    return new Promise(function (resolve, reject) {
      if (self.state === "closed") return reject({ code: "closed", message: "the client is closed" });
      var go = function () {
        var id = "c-" + (++self._nextId);
        var timer = setTimeout(function () {
          self._pending.delete(id);
          reject({ code: "timeout", message: type + " got no reply" });
        }, timeoutMs);
        self._pending.set(id, { resolve: resolve, reject: reject, timer: timer });
        self._send({ type: type, id: id, payload: payload === undefined ? null : payload });
      };
      if (self.state === "open") return go();
      var w = { go: go, reject: reject, timer: null };
      w.timer = setTimeout(function () {
        var i = self._waiting.indexOf(w);
        if (i >= 0) self._waiting.splice(i, 1);
        reject({ code: "timeout", message: type + ": not connected in time" });
      }, timeoutMs);
      self._waiting.push(w);
    });
  };

  // Sends without an id (no ack); dropped while offline.
  WshubClient.prototype.notify = function (type, payload) {
    if (this.state === "open") this._send({ type: type, payload: payload });
  };

  // Joins (and rejoins on every reconnection, from the last seq seen).
  // opts: {since, epoch} to recover from a known point on the first join.
  WshubClient.prototype.join = function (room, opts) {
    var self = this;
    var p = { room: room };
    if (opts && opts.since !== undefined) p.since = opts.since;
    if (opts && opts.epoch !== undefined) p.epoch = opts.epoch;
    return this.request("room:join", p).then(function (ack) {
      self._rooms.set(room, { seq: ack.seq, epoch: ack.epoch });
      return ack;
    });
  };
  WshubClient.prototype.leave = function (room) {
    this._rooms.delete(room);
    return this.request("room:leave", { room: room });
  };

  WshubClient.prototype._enqueue = function (id, frame) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (self.state === "closed") return reject({ code: "closed", message: "the client is closed" });
      if (self.state !== "open" && self._outbox.length >= self.maxBuffered) {
        return reject({ code: "buffer_full", message: self.maxBuffered + " publishes already wait for the connection" });
      }
      var o = { id: id, frame: frame, resolve: resolve, reject: reject, timer: null };
      self._outbox.push(o);
      if (self.state === "open") self._sendPublish(o);
    });
  };

  // Publishes with a fresh idempotency key: buffered while offline, resent
  // after a reconnect (a resend already stored is acked {duplicate: true}).
  // opts: {echo: true} to get the sender's own copy as a room:message.
  WshubClient.prototype.publish = function (room, data, opts) {
    var id = "c-" + (++this._nextId);
    var payload = { room: room, data: data, key: this._keyPrefix + "-" + this._nextId };
    if (opts && opts.echo) payload.echo = true;
    return this._enqueue(id, JSON.stringify({ type: "room:publish", id: id, payload: payload }));
  };
  // Publishes bytes (Uint8Array) as a keyed binary frame
  // [0x03][u16 room length][room][u8 key length][key][body]; acked like publish.
  WshubClient.prototype.publishBinary = function (room, body) {
    var key = this._keyPrefix + "-" + (++this._nextId);
    var r = new TextEncoder().encode(room);
    var k = new TextEncoder().encode(key);
    var f = new Uint8Array(4 + r.length + k.length + body.length);
    f[0] = 0x03; f[1] = r.length >> 8; f[2] = r.length & 0xff;
    f.set(r, 3); f[3 + r.length] = k.length; f.set(k, 4 + r.length); f.set(body, 4 + r.length + k.length);
    return this._enqueue(key, f);
  };
  WshubClient.prototype.presence = function (room) { return this.request("presence:get", { room: room }); };
  WshubClient.prototype.typing = function (room, active) {
    this.notify(active ? "typing:start" : "typing:stop", { room: room });
  };
  WshubClient.prototype.ping = function (payload) { return this.request("ping", payload === undefined ? null : payload); };
  // A new token: used by every later connection, sent now as auth:refresh when open.
  WshubClient.prototype.setToken = function (token) {
    this.token = token;
    if (this.state !== "open") return Promise.resolve(null);
    return this.request("auth:refresh", { token: token });
  };
  // Closes with 1000 and never reconnects; what waits is rejected with "closed".
  WshubClient.prototype.close = function () {
    this._stopped = true;
    if (this._retryTimer) { clearTimeout(this._retryTimer); this._retryTimer = null; }
    if (this.ws) { this.ws.close(1000); return; }
    if (this.state !== "closed") {
      this._emit("close", { code: 1000, reason: "closed by the application", wasOpen: false });
      this._finish("closed by the application");
    }
  };

  global.WshubClient = WshubClient;
  if (typeof module !== "undefined" && module.exports) module.exports = WshubClient;
})(typeof window !== "undefined" ? window : globalThis);
