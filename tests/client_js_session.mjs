// Drives the bundled browser client (src/protocol/assets/client.js, as served
// at /client.js) with Node's built-in WebSocket against a running wshub.
// Usage: node --experimental-websocket client_js_session.mjs HOST:PORT
// Prints "client.js ok" when the session behaved as docs/protocol.md says.
import assert from "node:assert/strict";

const addr = process.argv[2];
const source = await (await fetch(`http://${addr}/client.js`)).text();
const module = { exports: {} };
new Function("module", "globalThis", source)(module, globalThis);
const WshubClient = module.exports;
assert.equal(typeof WshubClient, "function");

const timeout = setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000);
const url = `ws://${addr}/ws`;
const alice = new WshubClient(url);
const bob = new WshubClient(url);
const helloA = await alice.ready;
const helloB = await bob.ready;
assert.equal(helloA.protocol, 1);
assert.equal(alice.ws.protocol, "wshub.v1.json");

const joined = await alice.join("js");
assert.equal(joined.members, 1);
const presence = new Promise((resolve) => alice.on("presence:join", resolve));
await bob.join("js");
assert.equal((await presence).clientId, helloB.clientId);

const message = new Promise((resolve) => alice.on("room:message", resolve));
const ack = await bob.publish("js", { text: "from node" });
assert.deepEqual(ack, { room: "js", seq: 1 });
assert.deepEqual(await message, { room: "js", seq: 1, from: helloB.clientId, data: { text: "from node" } });

const binary = new Promise((resolve) => alice.on("binary", resolve));
bob.publishBinary("js", new Uint8Array([9, 8, 7]));
const got = await binary;
assert.equal(got.room, "js");
assert.equal(got.seq, 2);
assert.deepEqual(Array.from(got.body), [9, 8, 7]);

const typing = new Promise((resolve) => alice.on("typing", resolve));
bob.typing("js", true);
assert.equal((await typing).active, true);

const members = (await alice.presence("js")).members.map((m) => m.clientId).sort();
assert.deepEqual(members, [helloA.clientId, helloB.clientId].sort());
assert.deepEqual(await alice.ping({ t: 5 }), { t: 5 });
await assert.rejects(alice.publish("elsewhere", 1), (e) => e.code === "forbidden");
await alice.leave("js");

const carol = new WshubClient(url);
await carol.ready;
const replayed = [];
carol.on("room:message", (p) => replayed.push(p.seq));
carol.on("binary", (p) => replayed.push(p.seq));
const recovered = await carol.join("js", { since: 0, epoch: joined.epoch });
assert.equal(recovered.recovered, true);
assert.deepEqual(replayed, [1, 2]);

const closed = new Promise((resolve) => alice.on("close", resolve));
alice.close();
assert.equal((await closed).code, 1000);
bob.close();
carol.close();
clearTimeout(timeout);
console.log("client.js ok");
