// Drives the bundled browser client (as served at /client.js) with Node's
// built-in WebSocket: an auth:refresh (setToken) whose rooms claim no longer
// allows a joined room brings `room:left`, and the client forgets the room
// (a reconnection would not rejoin it).
// Usage: node client_js_room_left.mjs HOST:PORT TOKEN_AB TOKEN_A
// Prints "client.js room:left ok".
import assert from "node:assert/strict";

const [addr, both, onlyA] = process.argv.slice(2);
const source = await (await fetch(`http://${addr}/client.js`)).text();
const module = { exports: {} };
new Function("module", "globalThis", source)(module, globalThis);
const WshubClient = module.exports;

const timeout = setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000);
const client = new WshubClient(`ws://${addr}/ws`, { token: both });
await client.ready;
await client.join("a");
await client.join("b");
const left = new Promise((resolve) => client.on("room:left", resolve));
const refreshed = client.setToken(onlyA);
assert.deepEqual(await left, { room: "b", reason: "forbidden" });
assert.ok((await refreshed).exp > 0, "the refresh is acked after room:left");
assert.equal(client._rooms.has("b"), false, "a left room is not rejoined");
assert.equal(client._rooms.has("a"), true);
client.close();
clearTimeout(timeout);
console.log("client.js room:left ok");
