// wshub browser client for wire protocol v1 (docs/protocol.md). No dependencies,
// no build step. It survives the network: the reconnect policy (backoff with
// full jitter, rejoin with since+epoch, keyed resends, the offline buffer, when
// it stops, the liveness deadlines) is docs/clients.md, shared with the Rust
// client wshub::client.
//
//   const c = new WshubClient("ws://" + location.host + "/ws",
//     { getToken, backoff: { minMs: 1000, maxMs: 30000 }, maxBuffered: 100, timeoutMs: 5000 });
//   c.on("state", (p) => show(p.state));                        // idle, connecting, open, reconnecting, closed
//   c.on("room:message", (p) => console.log(p.room, p.seq, p.from, p.data));
//   c.on("recovery", (p) => refetch(p.room));                   // history could not be replayed
//   await c.join("lobby");                                      // connects on the next tick
//   await c.publish("lobby", { text: "hi" });                   // buffered while offline
//
// Requests return Promises resolved with the ack's payload, rejected with a
// WshubError (an Error with a `code`): a server error code, or "timeout",
// "buffer_full", "disconnected" (the connection dropped before the reply;
// publishes are resent instead), "closed", "bad_reply", "too_large" (longer
// than the server's maxMessageBytes: not sent).
(function (global) {
  "use strict";

  // Every event a client emits. `on`, `once` and `off` accept these names
  // only, and a frame from the server can fire none but the one it means.
  var EVENTS = ["state", "open", "close", "reconnecting", "connected", "room:message", "binary",
    "presence", "presence:join", "presence:leave", "typing", "recovery", "room:left", "error"];
  // The heartbeat when `connected` names none (the server's default).
  var DEFAULT_HEARTBEAT_MS = 30000;
  // The shortest heartbeat honoured, so a server cannot make the client ping in a loop.
  var MIN_HEARTBEAT_MS = 100;
  // A token refresh (getToken) comes before exp by half the time left, at most
  // this; and never sooner than MIN_REFRESH_WAIT_MS after the last one.
  var MAX_REFRESH_LEAD_MS = 30000;
  var MIN_REFRESH_WAIT_MS = 1000;
  // The longest setTimeout browsers honour (longer ones fire at once).
  var MAX_TIMER_MS = 2147483647;
  // A rejoin the server refused with rate_limited (a client in many rooms
  // joins each twice after a server restart: the rejoin, then the resync) is
  // sent again after this, at most REJOIN_TRIES times in all.
  var REJOIN_RETRY_MS = 1000;
  var REJOIN_TRIES = 10;

  // What every Promise of this client is rejected with, and what "error" carries.
  class WshubError extends Error {
    constructor(code, message) {
      super(message);
      this.name = "WshubError";
      this.code = code;
    }
  }

  // A server's error payload as a WshubError.
  function fromServer(p) {
    var ok = p && typeof p === "object";
    return new WshubError(ok && typeof p.code === "string" ? p.code : "bad_reply",
      ok && typeof p.message === "string" ? p.message : "the server's error had no message");
  }

  function isSeq(v) { return Number.isSafeInteger(v) && v >= 0; }
  // What a subprotocol entry may hold (an RFC 7230 token): a JWT's letters,
  // digits, "-", "_" and "." are; a newline or a space is not.
  var TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

  // The reconnect delay: full jitter over min(maxMs, minMs * 2^(attempt-1)).
  // A pure function of the attempt (1 for the first retry) and a draw in [0, 1).
  function backoffDelay(backoff, attempt, draw) {
    var cap = Math.min(backoff.maxMs, backoff.minMs * Math.pow(2, Math.max(0, Math.min(attempt - 1, 30))));
    var d = typeof draw === "number" && draw >= 0 ? Math.min(draw, 1) : 0;
    return Math.floor(d * cap);
  }

  // The `exp` of a JWT in ms since the epoch, read without verifying (the
  // server verifies); null when the token is not a JWT with a numeric exp.
  function tokenExpiry(token) {
    try {
      var part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var claims = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
      return typeof claims.exp === "number" ? claims.exp * 1000 : null;
    } catch (e) { return null; }
  }

  function opt(v, dflt) { return v === undefined || v === null ? dflt : v; }

  function WshubClient(url, options) {
    options = options || {};
    var b = options.backoff || {};
    var self = this;
    this.url = url;
    this.token = options.token || null;
    // Called (may return a Promise) before every connection attempt and before
    // the token's exp, for a fresh token.
    this.getToken = typeof options.getToken === "function" ? options.getToken : null;
    this.backoff = { minMs: opt(b.minMs, 1000), maxMs: opt(b.maxMs, 30000) };
    this.maxBuffered = opt(options.maxBuffered, 100);
    // At most MAX_TIMER_MS: a longer one (Infinity for "no deadline") would fire at once.
    this.timeoutMs = Math.min(MAX_TIMER_MS, opt(options.timeoutMs, 5000));
    this.clientId = null;
    this.hello = null; // the last `connected` payload
    // "idle" (not started), "connecting" (until every room is rejoined), "open",
    // "reconnecting" (waiting out the backoff), "closed" (for good).
    this.state = "idle";
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
    this._connTimer = null;      // the deadline for getToken's answer, then for `connected`
    this._idleTimer = null;      // fires when nothing came for a heartbeat
    this._refreshTimer = null;   // getToken before the token's exp
    this._probe = null;          // the id of the liveness ping in flight
    this._rejoinRetries = [];    // timers of rejoins to send again (rate_limited)
    this._lastFrameAt = 0;
    this._openedAt = 0;
    this._gen = 0;               // counts attempts and the close, so late answers to an old one are ignored
    this._stopped = false;
    this._watching = null;       // the browser listeners (online, visibilitychange)
    this._keyPrefix = Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    this._newReady();
    // On the next tick: handlers attached right after `new` see everything.
    if (options.autoConnect !== false) setTimeout(function () { if (self.state === "idle") self._connect(); }, 0);
  }

  WshubClient.backoffDelay = backoffDelay;
  WshubClient.WshubError = WshubError;
  WshubClient.events = EVENTS.slice();

  WshubClient.prototype._newReady = function () {
    var self = this;
    this.ready = new Promise(function (resolve, reject) { self._resolveReady = resolve; self._rejectReady = reject; });
    this.ready.catch(function () {});
  };

  // Registers handler(payload). Events: "state" {state, previous}, "open"
  // {clientId}, "close" {code, reason, wasOpen}, "reconnecting" {attempt,
  // delayMs}, "room:message" {room, seq, from, data}, "binary" {room, seq,
  // body: Uint8Array}, "presence" {room, clientId, user, joined} (also as
  // "presence:join"/"presence:leave"), "typing" {room, clientId, active},
  // "recovery" {room, recovered, epoch, previousEpoch}, "room:left" {room,
  // reason}, "error" (a WshubError), "connected" (the first frame's payload).
  // Any other name throws a TypeError.
  WshubClient.prototype.on = function (name, handler) {
    if (EVENTS.indexOf(name) < 0) throw new TypeError("no event " + JSON.stringify(name) + "; the events are " + EVENTS.join(", "));
    if (typeof handler !== "function") throw new TypeError("the handler of " + name + " is not a function");
    if (!this._handlers.has(name)) this._handlers.set(name, []);
    this._handlers.get(name).push(handler);
    return this;
  };

  // Like `on`, for the next event of that name only.
  WshubClient.prototype.once = function (name, handler) {
    var self = this;
    if (typeof handler !== "function") throw new TypeError("the handler of " + name + " is not a function");
    var once = function (p) { self.off(name, once); handler.call(this, p); };
    once.listener = handler;
    return this.on(name, once);
  };

  // Removes a handler given to `on` or `once`; without one, every handler of the event.
  WshubClient.prototype.off = function (name, handler) {
    var list = this._handlers.get(name);
    if (!list) return this;
    if (handler === undefined) { this._handlers.delete(name); return this; }
    for (var i = list.length - 1; i >= 0; i--) {
      if (list[i] === handler || list[i].listener === handler) { list.splice(i, 1); break; }
    }
    return this;
  };

  WshubClient.prototype._emit = function (name, payload) {
    (this._handlers.get(name) || []).slice().forEach(function (h) {
      try { h(payload); } catch (e) { setTimeout(function () { throw e; }); }
    });
  };

  WshubClient.prototype._setState = function (state) {
    var previous = this.state;
    if (previous === state) return;
    this.state = state;
    this._emit("state", { state: state, previous: previous });
  };

  // Starts connecting: once when created with {autoConnect: false}, or again
  // after the client was closed (its rooms are rejoined). Otherwise nothing.
  WshubClient.prototype.connect = function () {
    if (this.state === "closed") {
      this._stopped = false;
      this._attempt = 0;
      this._newReady();
    } else if (this.state !== "idle") return this;
    this._connect();
    return this;
  };

  WshubClient.prototype._connect = function () {
    var self = this;
    var gen = ++this._gen;
    this._retryTimer = null;
    this.nextAttemptAt = null;
    this._setState("connecting");
    if (gen !== this._gen) return; // a "state" handler closed the client (or started anew)
    this._watch(true);
    if (!this.getToken) return this._open();
    var failed = function (why) {
      if (gen !== self._gen) return;
      self._gen += 1; // a late answer is ignored
      self._emit("error", new WshubError("token_unavailable", why));
      self._onClose(1006, "no token to connect with");
    };
    this._connTimer = setTimeout(function () { failed("getToken gave no token within " + self.timeoutMs + " ms"); }, this.timeoutMs);
    Promise.resolve().then(function () { return self.getToken(); }).then(function (token) {
      if (gen !== self._gen) return;
      clearTimeout(self._connTimer);
      if (typeof token === "string" && token) {
        // new WebSocket would throw, and the client would stop for good as if the URL were bad.
        if (!TOKEN.test(token)) return failed("getToken gave a token that cannot travel as a WebSocket subprotocol (a character other than letters, digits and !#$%&'*+-.^_`|~; a trailing newline?)");
        self.token = token;
      }
      self._open();
    }, function (e) { failed("getToken failed: " + String(e && e.message || e)); });
  };

  WshubClient.prototype._open = function () {
    var self = this;
    // A browser cannot set headers: the token travels as a subprotocol entry,
    // next to wshub.v1.json (which the server echoes).
    var protocols = ["wshub.v1.json"];
    if (this.token) protocols.push("bearer." + this.token);
    var ws;
    try { ws = new WebSocket(this.url, protocols); } catch (e) {
      this._emit("error", new WshubError("bad_url", String(e && e.message || e)));
      this._finish("bad url");
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.hello = null;
    ws.onmessage = function (ev) { if (self.ws === ws) self._onFrame(ev.data); };
    ws.onclose = function (ev) { if (self.ws === ws) self._onClose(ev.code, ev.reason); };
    // Covers the TCP connect, the handshake and the first frame.
    this._connTimer = setTimeout(function () {
      if (self.ws === ws) self._abandon("no `connected` within " + self.timeoutMs + " ms");
    }, this.timeoutMs);
  };

  // Gives the connection up without waiting for the server (which may never
  // answer): closes it, then goes on as if it had dropped.
  WshubClient.prototype._abandon = function (reason) {
    var ws = this.ws;
    if (!ws) return;
    this.ws = null;
    try { ws.close(); } catch (e) { /* already closing */ }
    this._onClose(1006, reason);
  };

  WshubClient.prototype._send = function (obj) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(typeof obj === "string" || obj instanceof Uint8Array ? obj : JSON.stringify(obj));
  };

  // Ends what belongs to one connection: its timers, the requests in flight
  // (rejected with `err`), the publishes in flight (waiting again).
  WshubClient.prototype._drop = function (err) {
    clearTimeout(this._connTimer); this._connTimer = null;
    clearTimeout(this._idleTimer); this._idleTimer = null;
    clearTimeout(this._refreshTimer); this._refreshTimer = null;
    this._probe = null;
    this._rejoinRetries.forEach(clearTimeout);
    this._rejoinRetries = [];
    this._resync.clear();
    this._pending.forEach(function (p) { clearTimeout(p.timer); p.reject(err); });
    this._pending.clear();
    // Sent publishes wait again: resent with the same key after the rejoin.
    this._outbox.forEach(function (o) { clearTimeout(o.timer); o.timer = null; });
  };

  WshubClient.prototype._onClose = function (code, reason) {
    var self = this;
    this.ws = null;
    var wasOpen = this.state === "open";
    this._drop(new WshubError("disconnected", "the connection dropped before the reply"));
    // Decide first, so that a "close" handler sees state "closed" when it is final.
    var stop = null;
    if (this._stopped) stop = "closed by the application";
    else if (code === 1000) stop = "the server closed normally (1000)";
    else if (code === 1008 && reason === "token expired" && !this.getToken) {
      this._emit("error", new WshubError("token_expired", "the session's token expired; not reconnecting with it (call setToken before exp, or give getToken)"));
      stop = "token expired";
    } else if (code === 4003) {
      this._emit("error", new WshubError("banned", "the server closed this user's connections (4003): not reconnecting"));
      stop = "banned";
    }
    if (stop) {
      this._finish(stop);
      this._emit("close", { code: code, reason: reason, wasOpen: wasOpen });
      return;
    }
    // The count starts again only after a connection that stayed up as long
    // as the longest delay: a server that accepts and drops at once gets the
    // whole schedule, not a retry a second.
    if (wasOpen && Date.now() - this._openedAt >= this.backoff.maxMs) this._attempt = 0;
    this._attempt += 1;
    var delay = Math.min(MAX_TIMER_MS, backoffDelay(this.backoff, this._attempt, Math.random()));
    this.nextAttemptAt = Date.now() + delay;
    this._setState("reconnecting");
    if (this.state !== "reconnecting") return; // a "state" handler closed the client (it said "close")
    this._emit("close", { code: code, reason: reason, wasOpen: wasOpen });
    if (this.state !== "reconnecting") return; // a "close" handler closed the client
    this._emit("reconnecting", { attempt: this._attempt, delayMs: delay });
    if (this.state !== "reconnecting" || this._retryTimer) return; // a handler closed or retried
    this._retryTimer = setTimeout(function () { self._connect(); }, delay);
  };

  // Stops for good: everything waiting is rejected with "closed".
  WshubClient.prototype._finish = function (why) {
    var closed = new WshubError("closed", "the client is closed: " + why);
    this._gen += 1;
    this.nextAttemptAt = null;
    this._watch(false);
    this._outbox.forEach(function (o) { clearTimeout(o.timer); o.reject(closed); });
    this._outbox = [];
    this._waiting.forEach(function (w) { clearTimeout(w.timer); w.reject(closed); });
    this._waiting = [];
    this._rejectReady(closed);
    this._setState("closed");
  };

  // Tries now instead of waiting out the current delay.
  WshubClient.prototype.retryNow = function () {
    if (this.state !== "reconnecting") return;
    clearTimeout(this._retryTimer); // none yet when called from a "reconnecting" handler
    this._connect();
  };

  // --- Liveness: a browser does not show the server's pings to scripts, so the
  // client asks itself: after a heartbeat without a frame, on `online` and
  // when the page becomes visible (after a sleep), it sends a `ping`; without
  // the ack in min(heartbeat, timeoutMs) it gives the connection up.

  WshubClient.prototype._heartbeatMs = function () {
    var h = this.hello && this.hello.heartbeatMs;
    return typeof h === "number" && h > 0 ? Math.max(MIN_HEARTBEAT_MS, Math.min(h, MAX_TIMER_MS)) : DEFAULT_HEARTBEAT_MS;
  };

  WshubClient.prototype._armIdle = function (ms) {
    var self = this;
    clearTimeout(this._idleTimer);
    this._idleTimer = setTimeout(function () {
      self._idleTimer = null;
      var quiet = Date.now() - self._lastFrameAt;
      if (quiet >= self._heartbeatMs()) self._checkAlive();
      else self._armIdle(self._heartbeatMs() - quiet);
    }, ms);
  };

  // Sends a ping unless one is in flight; no ack in time: the connection is dead.
  WshubClient.prototype._checkAlive = function () {
    var self = this;
    if (this.state !== "open" || this._probe) return;
    var id = "p-" + (++this._nextId);
    var ms = Math.min(this._heartbeatMs(), this.timeoutMs);
    var ws = this.ws;
    var alive = function () { self._probe = null; self._armIdle(self._heartbeatMs()); };
    this._probe = id;
    this._pending.set(id, {
      timer: setTimeout(function () {
        self._pending.delete(id);
        self._abandon("no reply to a ping within " + ms + " ms");
      }, ms),
      resolve: alive,
      // An error reply (rate_limited) is a reply too; the connection's own end rejects it with ws gone.
      reject: function () { if (self.ws === ws) alive(); }
    });
    this._send({ type: "ping", id: id, payload: null });
  };

  // Listens (in a browser) for `online` (retry at once, or check an open
  // connection) and `visibilitychange` (check it when the page shows again).
  WshubClient.prototype._watch = function (on) {
    var self = this;
    var doc = global.document;
    if (on && !this._watching) {
      this._watching = {
        online: function () { if (self.state === "reconnecting") self.retryNow(); else self._checkAlive(); },
        visible: function () { if (doc.visibilityState === "visible") self._checkAlive(); }
      };
      if (typeof global.addEventListener === "function") global.addEventListener("online", this._watching.online);
      if (doc && typeof doc.addEventListener === "function") doc.addEventListener("visibilitychange", this._watching.visible);
    } else if (!on && this._watching) {
      if (typeof global.removeEventListener === "function") global.removeEventListener("online", this._watching.online);
      if (doc && typeof doc.removeEventListener === "function") doc.removeEventListener("visibilitychange", this._watching.visible);
      this._watching = null;
    }
  };

  // --- Tokens: with getToken, a fresh one is asked for before exp and sent
  // as auth:refresh; a connection closed because the token expired reconnects
  // with a fresh one.
  WshubClient.prototype._armRefresh = function () {
    var self = this;
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    var exp = this.getToken && tokenExpiry(this.token);
    if (!exp) return;
    var left = exp - Date.now();
    var at = Date.now() + Math.max(MIN_REFRESH_WAIT_MS, left - Math.min(MAX_REFRESH_LEAD_MS, left / 2));
    var wake = function () {
      self._refreshTimer = null;
      if (Date.now() < at) { self._refreshTimer = setTimeout(wake, Math.min(MAX_TIMER_MS, at - Date.now())); return; }
      var gen = self._gen;
      Promise.resolve().then(function () { return self.getToken(); }).then(function (token) {
        if (gen !== self._gen || typeof token !== "string" || !token) return null;
        return self.setToken(token).then(function () { if (gen === self._gen && self.state === "open") self._armRefresh(); });
      }).catch(function (e) {
        if (gen !== self._gen) return; // the connection went meanwhile; the next one asks anew
        self._emit("error", new WshubError(e && e.code || "token_unavailable", "refreshing the token: " + String(e && e.message || e)));
      });
    };
    this._refreshTimer = setTimeout(wake, Math.min(MAX_TIMER_MS, at - Date.now()));
  };

  // --- Rooms

  WshubClient.prototype._rejoin = function (room, payload, resync, tries) {
    var self = this;
    tries = tries || 1;
    var id = "j-" + (++this._nextId);
    var ws = this.ws;
    this._pending.set(id, {
      timer: setTimeout(function () {
        self._pending.delete(id);
        self._abandon("no reply to the rejoin of " + room + " within " + self.timeoutMs + " ms");
      }, this.timeoutMs),
      resolve: function (ack) {
        if (!isObject(ack) || !isSeq(ack.seq)) return self._abandon("the rejoin of " + room + " was acked without a seq");
        self._onRejoin(room, resync, ack, ws);
      },
      reject: function (err) {
        // The connection went first (a server's error may carry any code, "closed" too).
        if (self.ws !== ws) return;
        if (err.code === "rate_limited") {
          // Not a refusal of the room: the same rejoin again, later.
          if (tries >= REJOIN_TRIES) return self._abandon("the rejoin of " + room + " was rate limited " + tries + " times");
          var retry = setTimeout(function () {
            self._rejoinRetries.splice(self._rejoinRetries.indexOf(retry), 1);
            self._rejoin(room, payload, resync, tries + 1);
          }, REJOIN_RETRY_MS);
          self._rejoinRetries.push(retry);
          return;
        }
        self._rooms.delete(room);
        self._resync.delete(room);
        self._emit("error", new WshubError(err.code, "rejoining " + room + ": " + err.message));
        if (self.ws === ws) self._rejoinDone(); // unless an "error" handler closed the client
      }
    });
    this._send({ type: "room:join", id: id, payload: payload });
  };

  function epochOf(ack) { return typeof ack.epoch === "string" ? ack.epoch : null; }

  WshubClient.prototype._onRejoin = function (room, resync, ack, ws) {
    var self = this;
    if (!this._rooms.has(room)) {
      // Left (leave(), room:left) while the rejoin was in flight: it stays left.
      this._resync.delete(room);
      return this._rejoinDone();
    }
    var before = this._rooms.get(room) || { seq: 0, epoch: null };
    var epoch = epochOf(ack);
    if (resync) {
      var r = this._resync.get(room);
      this._resync.delete(room);
      var last = ack.seq;
      this._emit("recovery", { room: room, recovered: false, epoch: epoch, previousEpoch: r ? r.previousEpoch : null });
      if (r) {
        Array.from(r.held.keys()).sort(function (a, b) { return a - b; }).forEach(function (seq) {
          last = Math.max(last, seq);
          var m = r.held.get(seq);
          self._emit(m[0], m[1]);
        });
      }
      this._rooms.set(room, { seq: last, epoch: epoch });
    } else if (before.epoch && epoch && before.epoch !== epoch) {
      // The room was reset (server restart): read its new epoch from seq 1.
      this._rooms.set(room, { seq: 0, epoch: epoch });
      this._resync.set(room, { previousEpoch: before.epoch, held: new Map() });
      this._rejoin(room, { room: room, since: 0, epoch: epoch }, true);
      return;
    } else {
      this._rooms.set(room, { seq: Math.max(ack.seq, before.seq), epoch: epoch });
      if (ack.recovered === false) this._emit("recovery", { room: room, recovered: false, epoch: epoch, previousEpoch: before.epoch });
    }
    if (this.ws === ws) this._rejoinDone(); // unless a handler closed the client
  };

  WshubClient.prototype._rejoinDone = function () {
    this._rejoining -= 1;
    if (this._rejoining === 0) this._goOnline();
  };

  // Every room rejoined: send what waited, in order, then say "open".
  WshubClient.prototype._goOnline = function () {
    var self = this;
    if (!this.ws) return;
    this._openedAt = Date.now();
    this._armIdle(this._heartbeatMs());
    this._armRefresh();
    this._outbox.slice().forEach(function (o) { self._sendPublish(o); }); // a copy: one too large leaves it
    var waiting = this._waiting;
    this._waiting = [];
    waiting.forEach(function (w) { clearTimeout(w.timer); w.go(); });
    // After the flush: what a "state" handler sends goes once, behind what waited.
    this._setState("open");
    if (this.state !== "open") return; // a "state" handler closed the client
    this._resolveReady(this.hello); // the `connected` payload
    this._emit("open", { clientId: this.clientId });
  };

  // A WshubError "too_large" when the frame is longer than the server's
  // maxMessageBytes: sent, it would close the connection (1009), and a
  // publish would be resent on every reconnection, each closed the same way.
  WshubClient.prototype._tooLarge = function (frame) {
    var max = this.hello && this.hello.maxMessageBytes;
    if (typeof max !== "number" || !(max > 0)) return null;
    var n = typeof frame === "string" ? new TextEncoder().encode(frame).length : frame.length;
    return n > max ? new WshubError("too_large", "a message of " + n + " bytes; the server takes at most " + max) : null;
  };

  WshubClient.prototype._sendPublish = function (o) {
    var self = this;
    var big = this._tooLarge(o.frame);
    if (big) {
      var at = this._outbox.indexOf(o);
      if (at >= 0) this._outbox.splice(at, 1);
      clearTimeout(o.timer);
      return o.reject(big);
    }
    clearTimeout(o.timer);
    o.timer = setTimeout(function () {
      var i = self._outbox.indexOf(o);
      if (i >= 0) self._outbox.splice(i, 1);
      o.reject(new WshubError("timeout", "publish got no ack"));
      self._checkAlive();
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

  WshubClient.prototype._badFrame = function (what) {
    this._emit("error", new WshubError("bad_frame", "dropped a frame from the server: " + what));
  };

  WshubClient.prototype._onFrame = function (data) {
    var self = this;
    this._lastFrameAt = Date.now();
    if (typeof data !== "string") {
      var b = new Uint8Array(data);
      if (b.length < 11 || b[0] !== 0x02) return;
      var roomLen = (b[1] << 8) | b[2];
      if (b.length < 11 + roomLen) return;
      var room = new TextDecoder().decode(b.subarray(3, 3 + roomLen));
      var view = new DataView(data, 3 + roomLen, 8);
      var seq = view.getUint32(0) * 4294967296 + view.getUint32(4);
      if (!isSeq(seq)) return this._badFrame("a binary message's seq is past 2^53");
      this._deliver("binary", { room: room, seq: seq, body: b.subarray(11 + roomLen) });
      return;
    }
    var env;
    try { env = JSON.parse(data); } catch (e) { return this._badFrame("not JSON"); }
    if (!isObject(env)) return this._badFrame("not a JSON object");
    var p = env.payload;
    if (env.type === "connected") {
      if (this.hello) return this._badFrame("a second `connected`");
      clearTimeout(this._connTimer);
      this._connTimer = null;
      p = isObject(p) ? p : {};
      this.clientId = typeof p.clientId === "string" ? p.clientId : null;
      this.hello = p;
      var gen = this._gen;
      this._emit("connected", p);
      if (gen !== this._gen) return; // a "connected" handler closed the client
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
        if (env.type === "ack") pending.resolve(p); else pending.reject(fromServer(p));
        return;
      }
      for (var i = 0; i < this._outbox.length; i++) {
        var o = this._outbox[i];
        if (o.id === env.id) {
          this._outbox.splice(i, 1);
          clearTimeout(o.timer);
          if (env.type === "ack") o.resolve(p); else o.reject(fromServer(p));
          return;
        }
      }
    }
    // Every other frame names its event here, and only here.
    if (!isObject(p)) return;
    switch (env.type) {
      case "room:message":
        if (typeof p.room !== "string" || !isSeq(p.seq) || p.seq === 0) return this._badFrame("a room:message without a room or a whole positive seq");
        this._deliver("room:message", p);
        return;
      case "presence:join":
      case "presence:leave":
        if (typeof p.room !== "string") return;
        this._emit(env.type, p);
        this._emit("presence", { room: p.room, clientId: p.clientId, user: p.user, joined: env.type === "presence:join" });
        return;
      case "typing":
        if (typeof p.room === "string") this._emit("typing", p);
        return;
      case "room:left":
        if (typeof p.room !== "string") return;
        this._rooms.delete(p.room);
        this._resync.delete(p.room);
        this._emit("room:left", { room: p.room, reason: p.reason });
        return;
      case "error":
        this._emit("error", fromServer(p));
        return;
      default:
        return; // a type this client does not know: nothing to say
    }
  };

  // Sends {type, id, payload}; resolves with the ack's payload. Offline, it
  // waits for the connection (within the timeout). `onAck(payload)` runs as
  // the ack is read, before any later frame; an Error it returns rejects.
  WshubClient.prototype._request = function (type, payload, timeoutMs, onAck) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (self.state === "closed") return reject(new WshubError("closed", "the client is closed"));
      var go = function () {
        var id = "c-" + (++self._nextId);
        var frame;
        // A payload JSON cannot encode (a cycle, a BigInt) fails this request only:
        // thrown here, it would stop the flush of everything else that waited.
        try { frame = JSON.stringify({ type: type, id: id, payload: payload === undefined ? null : payload }); } catch (e) {
          return reject(new WshubError("bad_request", type + ": the payload cannot be sent as JSON: " + String(e && e.message || e)));
        }
        var big = self._tooLarge(frame);
        if (big) return reject(big);
        var timer = setTimeout(function () {
          self._pending.delete(id);
          reject(new WshubError("timeout", type + " got no reply"));
        }, timeoutMs);
        var settle = function (p) {
          var err = onAck ? onAck(p) : null;
          if (err) reject(err); else resolve(p);
        };
        self._pending.set(id, { resolve: settle, reject: reject, timer: timer });
        self._send(frame);
      };
      if (self.state === "open") return go();
      var w = { go: go, reject: reject, timer: null };
      w.timer = setTimeout(function () {
        var i = self._waiting.indexOf(w);
        if (i >= 0) self._waiting.splice(i, 1);
        reject(new WshubError("timeout", type + ": not connected in time"));
      }, timeoutMs);
      self._waiting.push(w);
    });
  };

  WshubClient.prototype.request = function (type, payload, opts) {
    return this._request(type, payload, opts && opts.timeoutMs !== undefined ? Math.min(MAX_TIMER_MS, opts.timeoutMs) : this.timeoutMs, null);
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
    // The position is taken from the ack as it is read: messages that came
    // right behind it count from there.
    return this._request("room:join", p, this.timeoutMs, function (ack) {
      if (!isObject(ack) || !isSeq(ack.seq)) return new WshubError("bad_reply", "the join of " + room + " was acked without a seq");
      self._rooms.set(room, { seq: ack.seq, epoch: epochOf(ack) });
      return null;
    });
  };
  WshubClient.prototype.leave = function (room) {
    this._rooms.delete(room);
    return this.request("room:leave", { room: room });
  };

  WshubClient.prototype._enqueue = function (id, frame) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (self.state === "closed") return reject(new WshubError("closed", "the client is closed"));
      if (self.state !== "open" && self._outbox.length >= self.maxBuffered) {
        return reject(new WshubError("buffer_full", self.maxBuffered + " publishes already wait for the connection"));
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
  // Closes with 1000 and never reconnects; at once, without waiting for the
  // server's answer. What waits is rejected with "closed".
  WshubClient.prototype.close = function () {
    if (this.state === "closed") return;
    var wasOpen = this.state === "open";
    var ws = this.ws;
    this._stopped = true;
    this.ws = null;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (ws) { try { ws.close(1000); } catch (e) { /* already closing */ } }
    var why = "closed by the application";
    this._drop(new WshubError("closed", "the client is closed: " + why));
    this._finish(why);
    this._emit("close", { code: 1000, reason: why, wasOpen: wasOpen });
  };

  global.WshubClient = WshubClient;
  if (typeof module !== "undefined" && module.exports) module.exports = WshubClient;
})(typeof window !== "undefined" ? window : globalThis);
