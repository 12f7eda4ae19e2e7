// wshub browser client for wire protocol v1 (docs/protocol.md). No dependencies.
//
//   const c = new WshubClient("ws://" + location.host + "/ws");
//   c.on("connected", (p) => console.log("I am", p.clientId));
//   c.on("room:message", (p) => console.log(p.room, p.seq, p.from, p.data));
//   await c.ready;
//   await c.join("lobby");
//   await c.publish("lobby", { text: "hi" });
//
// Requests return Promises resolved with the ack's payload, rejected with the
// error payload ({code, message}). Reconnection with buffering and recovery is
// not in this version: listen for "close" and call join(room, {since}) on a new
// client, with the last seq and epoch you saw.
(function (global) {
  "use strict";

  function WshubClient(url, options) {
    options = options || {};
    this.url = url;
    this.timeoutMs = options.timeoutMs || 10000;
    this.clientId = null;
    this._nextId = 0;
    this._pending = new Map();
    this._handlers = new Map();
    var self = this;
    this.ready = new Promise(function (resolve, reject) {
      self._resolveReady = resolve;
      self._rejectReady = reject;
    });
    var ws = new WebSocket(url, ["wshub.v1.json"]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = function (ev) { self._onFrame(ev.data); };
    ws.onclose = function (ev) {
      self._rejectReady(new Error("closed before connected"));
      self._pending.forEach(function (p) { p.reject({ code: "closed", message: "connection closed" }); });
      self._pending.clear();
      self._emit("close", { code: ev.code, reason: ev.reason });
    };
    ws.onerror = function () { self._emit("socketerror", {}); };
  }

  // Registers handler(payload, envelope) for a server message type, or for
  // "close" ({code, reason}), "binary" ({room, seq, body: Uint8Array}) and
  // "error" (errors that answer no request of this client).
  WshubClient.prototype.on = function (type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, []);
    this._handlers.get(type).push(handler);
    return this;
  };

  WshubClient.prototype._emit = function (type, payload, envelope) {
    (this._handlers.get(type) || []).forEach(function (h) { h(payload, envelope); });
  };

  WshubClient.prototype._onFrame = function (data) {
    if (typeof data !== "string") {
      var b = new Uint8Array(data);
      if (b.length < 11 || b[0] !== 0x02) return;
      var roomLen = (b[1] << 8) | b[2];
      var room = new TextDecoder().decode(b.subarray(3, 3 + roomLen));
      var view = new DataView(data, 3 + roomLen, 8);
      var seq = view.getUint32(0) * 4294967296 + view.getUint32(4);
      this._emit("binary", { room: room, seq: seq, body: b.subarray(11 + roomLen) });
      return;
    }
    var env;
    try { env = JSON.parse(data); } catch (e) { return; }
    if (env.type === "connected") {
      this.clientId = env.payload.clientId;
      this._resolveReady(env.payload);
    }
    var pending = env.id !== undefined ? this._pending.get(env.id) : undefined;
    if (pending && (env.type === "ack" || env.type === "error")) {
      this._pending.delete(env.id);
      clearTimeout(pending.timer);
      if (env.type === "ack") pending.resolve(env.payload);
      else pending.reject(env.payload);
      return;
    }
    this._emit(env.type, env.payload, env);
  };

  // Sends {type, id, payload} and resolves with the ack's payload.
  WshubClient.prototype.request = function (type, payload) {
    var self = this;
    var id = "c-" + (++this._nextId);
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () {
        self._pending.delete(id);
        reject({ code: "timeout", message: type + " got no reply" });
      }, self.timeoutMs);
      self._pending.set(id, { resolve: resolve, reject: reject, timer: timer });
      self.ws.send(JSON.stringify({ type: type, id: id, payload: payload }));
    });
  };

  // Sends without an id: no ack comes back.
  WshubClient.prototype.notify = function (type, payload) {
    this.ws.send(JSON.stringify({ type: type, payload: payload }));
  };

  // opts: {since, epoch} to recover missed messages.
  WshubClient.prototype.join = function (room, opts) {
    var p = { room: room };
    if (opts && opts.since !== undefined) p.since = opts.since;
    if (opts && opts.epoch !== undefined) p.epoch = opts.epoch;
    return this.request("room:join", p);
  };
  WshubClient.prototype.leave = function (room) { return this.request("room:leave", { room: room }); };
  WshubClient.prototype.publish = function (room, data, opts) {
    return this.request("room:publish", { room: room, data: data, echo: !!(opts && opts.echo) });
  };
  WshubClient.prototype.presence = function (room) { return this.request("presence:get", { room: room }); };
  WshubClient.prototype.typing = function (room, active) {
    this.notify(active ? "typing:start" : "typing:stop", { room: room });
  };
  WshubClient.prototype.ping = function (payload) { return this.request("ping", payload === undefined ? null : payload); };
  // Publishes bytes (Uint8Array) as a binary frame: [0x01][u16 room length][room][body].
  WshubClient.prototype.publishBinary = function (room, body) {
    var r = new TextEncoder().encode(room);
    var f = new Uint8Array(3 + r.length + body.length);
    f[0] = 0x01; f[1] = r.length >> 8; f[2] = r.length & 0xff;
    f.set(r, 3); f.set(body, 3 + r.length);
    this.ws.send(f);
  };
  WshubClient.prototype.close = function () { this.ws.close(1000); };

  global.WshubClient = WshubClient;
  if (typeof module !== "undefined" && module.exports) module.exports = WshubClient;
})(typeof window !== "undefined" ? window : globalThis);
