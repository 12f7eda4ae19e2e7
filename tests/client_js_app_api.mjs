// client.js as an application developer uses it, against a running wshub with
// auth on (--jwt-secret SECRET): handlers attached before connect(), the
// `state` event, `once`/`off`, rejections that are WshubErrors with a code,
// getToken for the first connection, for the refresh before exp and for the
// reconnection after a token expired. Driven by tests/interop_client_js_node.rs.
// Usage: node --experimental-websocket client_js_app_api.mjs HOST:PORT SECRET
// Prints "client.js app api ok".
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

const [addr, secret] = process.argv.slice(2);
const source = readFileSync(new URL("../src/protocol/assets/client.js", import.meta.url), "utf8");
const module = { exports: {} };
new Function("module", "globalThis", source)(module, globalThis);
const WshubClient = module.exports;
const killer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 40000);
const url = `ws://${addr}/ws`;

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function sign(sub, seconds) {
  const exp = Math.floor(Date.now() / 1000) + seconds;
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp })}`;
  return { token: `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`, exp: exp * 1000 };
}
function until(test, what, ms = 15000) {
  return new Promise((resolve, reject) => {
    const limit = Date.now() + ms;
    const t = setInterval(() => {
      if (test()) { clearInterval(t); resolve(); } else if (Date.now() > limit) { clearInterval(t); reject(new Error(`${what} did not happen within ${ms} ms`)); }
    }, 20);
  });
}

// Created idle; handlers attached afterwards see the first connection whole.
const tokens = [];
const ann = new WshubClient(url, {
  autoConnect: false,
  getToken: () => {
    const t = sign("ann", tokens.length === 0 ? 3 : 60);
    tokens.push(t);
    return Promise.resolve(t.token);
  },
});
await new Promise((resolve) => setTimeout(resolve, 20));
assert.equal(ann.state, "idle");
assert.equal(tokens.length, 0);
const states = [];
const seen = [];
ann.on("state", (p) => states.push(p.state));
["open", "close", "error"].forEach((n) => ann.on(n, (p) => seen.push([n, p])));
ann.connect();
const hello = await ann.ready;
assert.equal(hello.user, "ann");
assert.deepEqual(states, ["connecting", "open"]);
assert.equal(tokens.length, 1);

// once fires once; off removes.
let onceCount = 0;
let offCount = 0;
const all = [];
ann.once("room:message", () => { onceCount += 1; });
const removed = () => { offCount += 1; };
ann.on("room:message", removed);
ann.off("room:message", removed);
ann.on("room:message", (p) => all.push(p.seq));
assert.throws(() => ann.on("message", () => {}), TypeError);
// A handler that is not a function is refused when given, not when the event comes.
assert.throws(() => ann.once("open", "not a function"), TypeError);
await ann.join("app");
await ann.publish("app", 1, { echo: true });
await ann.publish("app", 2, { echo: true });
await until(() => all.length === 2, "both echoes");
assert.deepEqual([onceCount, offCount, all], [1, 0, [1, 2]]);

// Rejections are Errors with a code.
await assert.rejects(ann.publish("elsewhere", 1), (e) =>
  e instanceof Error && e instanceof WshubClient.WshubError && e.code === "forbidden" && typeof e.message === "string");

// The first token lives 3 s: getToken is asked again before its exp, the
// refresh is sent, and the connection outlives the first token.
await until(() => tokens.length >= 2, "a refresh before exp");
const firstExp = tokens[0].exp;
await until(() => Date.now() > firstExp + 1000, "the first token's exp", 10000);
assert.deepEqual(await ann.ping("still here"), "still here");
assert.equal(ann.state, "open");
assert.deepEqual(seen.map(([n]) => n), ["open"], JSON.stringify(seen));

// A refresh that fails: the server closes with 1008 at exp, and the client
// reconnects with a fresh token from getToken (rather than stopping).
let calls = 0;
const bob = new WshubClient(url, {
  backoff: { minMs: 50, maxMs: 200 },
  getToken: () => {
    calls += 1;
    if (calls === 2) return Promise.reject(new Error("token service unreachable"));
    return sign("bob", calls === 1 ? 2 : 60).token;
  },
});
const bobSeen = [];
["open", "close", "error"].forEach((n) => bob.on(n, (p) => bobSeen.push([n, p.code, p.reason])));
await bob.ready;
await bob.join("app");
await until(() => bobSeen.filter(([n]) => n === "open").length === 2, "the reconnection with a fresh token");
assert.ok(bobSeen.some(([n, code]) => n === "error" && code === "token_unavailable"), JSON.stringify(bobSeen));
assert.ok(bobSeen.some(([n, code, reason]) => n === "close" && code === 1008 && reason === "token expired"), JSON.stringify(bobSeen));
assert.equal(calls, 3);
assert.deepEqual((await bob.presence("app")).room, "app", "rejoined with the fresh token");

// A token for a year: no refresh now (a timer past 2^31 ms would fire at once).
let carlCalls = 0;
const carl = new WshubClient(url, { getToken: () => { carlCalls += 1; return sign("carl", 365 * 24 * 3600).token; } });
await carl.ready;
await carl.ping(1);
await new Promise((resolve) => setTimeout(resolve, 1500));
assert.equal(carlCalls, 1, "getToken asked once for a token that lives a year");
carl.close();

ann.close();
bob.close();
assert.deepEqual(states, ["connecting", "open", "closed"]);
// connect() after close(): a new connection, its rooms rejoined.
ann.connect();
const again = await ann.ready;
assert.deepEqual(states, ["connecting", "open", "closed", "connecting", "open"]);
assert.ok((await ann.presence("app")).members.some((m) => m.clientId === again.clientId), "rejoined app");
ann.close();
clearTimeout(killer);
console.log("client.js app api ok");
process.exit(0);
