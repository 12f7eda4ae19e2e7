// Two Chromium pages chat through the demo page (GET /), the server is
// stopped and started again on the same port, a message is sent while it is
// down; both pages must reconnect, rejoin, and show that message exactly once.
// Driven by tests/browser_chat_survives_a_server_restart.rs, which starts and
// stops the server when this script asks on stdout ("stop-server",
// "start-server") and answers on stdin. Saves a screenshot of each state.
// Usage: node chat_survives_restart.mjs HOST:PORT SCREENSHOT_DIR
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [addr, shots] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(what) {
  console.log(what);
  const { value } = await lines.next();
  assert.equal(value, what.replace("-server", "ed").replace("stoped", "stopped"), `the driver answered ${value}`);
}
const killer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 100000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const ann = await context.newPage();
  const bob = await context.newPage();
  for (const p of [ann, bob]) p.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await ann.goto(`http://${addr}/?name=Ann&room=lobby`);
  await bob.goto(`http://${addr}/?name=Bob&room=lobby`);
  const open = (p) => p.waitForFunction(() => window.chat.state === "open" && document.querySelectorAll("#members li").length === 2, null, { timeout: 20000 });
  await open(ann);
  await open(bob);
  const record = (p) => p.evaluate(() => { window.__reconnects = []; window.chat.on("reconnecting", (e) => window.__reconnects.push(e)); });
  await record(ann);
  await record(bob);

  // Chat both ways.
  const say = async (p, text) => { await p.fill("#send-form input[name=text]", text); await p.press("#send-form input[name=text]", "Enter"); };
  const logHas = (p, text, n = 1) => p.waitForFunction(([t, n]) => document.getElementById("log").innerText.split(t).length - 1 >= n, [text, n], { timeout: 20000 });
  await say(ann, "hello from Ann");
  await logHas(bob, "hello from Ann");
  await say(bob, "hi Ann, Bob here");
  await logHas(ann, "hi Ann, Bob here");
  // Bob types: Ann sees it.
  await bob.type("#send-form input[name=text]", "typing away", { delay: 20 });
  await ann.waitForFunction(() => document.getElementById("typing").textContent.includes("Bob is typing"), null, { timeout: 10000 });
  await ann.screenshot({ path: `${shots}/1-chatting-ann.png` });
  await bob.fill("#send-form input[name=text]", "");

  // The server goes away.
  await ask("stop-server");
  const reconnecting = (p) => p.waitForFunction(() => window.chat.state !== "open" && document.getElementById("bar").dataset.state === "reconnecting", null, { timeout: 20000 });
  await reconnecting(ann);
  await reconnecting(bob);
  await ann.waitForFunction(() => /reconnecting in \d+ s/.test(document.getElementById("status").textContent), null, { timeout: 20000 });
  await ann.screenshot({ path: `${shots}/2-reconnecting-ann.png` });
  await say(ann, "sent while the server was down");
  await ann.waitForSelector("#log .pending", { timeout: 5000 });
  await ann.screenshot({ path: `${shots}/3-offline-message-ann.png` });

  // The offline buffer is bounded, and close() rejects what waits (never a silent drop).
  const bounded = await ann.evaluate(async () => {
    const c = new WshubClient("ws://" + location.host + "/ws", { maxBuffered: 1, backoff: { minMs: 50, maxMs: 100 } });
    const first = c.publish("x", 1).then(() => "acked", (e) => e.code);
    const second = await c.publish("x", 2).then(() => "acked", (e) => e.code);
    c.close();
    return { second, first: await first, state: c.state };
  });
  assert.deepEqual(bounded, { second: "buffer_full", first: "closed", state: "closed" });

  // Back on the same port: both reconnect and rejoin; the message arrives once.
  await ask("start-server");
  await open(ann);
  await open(bob);
  await logHas(bob, "sent while the server was down");
  await logHas(ann, "sent while the server was down");
  await ann.waitForFunction(() => !document.querySelector("#log .pending"), null, { timeout: 10000 });
  // Let anything late arrive, then count.
  await say(bob, "back again");
  await logHas(ann, "back again");
  const count = (p) => p.evaluate(() => document.getElementById("log").innerText.split("sent while the server was down").length - 1);
  assert.equal(await count(bob), 1, "Bob saw the offline message once");
  assert.equal(await count(ann), 1, "Ann saw her offline message once");
  // The delays seen: attempts 1, 2, ... each within [0, min(max, min * 2^(attempt-1))].
  for (const p of [ann, bob]) {
    const seen = await p.evaluate(() => window.__reconnects);
    assert.ok(seen.length >= 1, "reconnected after at least one wait");
    seen.forEach((e, i) => {
      assert.equal(e.attempt, i + 1);
      assert.ok(e.delayMs >= 0 && e.delayMs <= Math.min(30000, 1000 * 2 ** (e.attempt - 1)), JSON.stringify(e));
    });
  }
  const stats = await ann.evaluate(() => ({ outbox: window.chat._outbox.length, state: window.chat.state }));
  assert.deepEqual(stats, { outbox: 0, state: "open" });
  await ann.screenshot({ path: `${shots}/4-reconnected-ann.png` });
  await bob.screenshot({ path: `${shots}/5-reconnected-bob.png` });

  // close() stops for good.
  await ann.evaluate(() => window.chat.close());
  await ann.waitForFunction(() => document.getElementById("bar").dataset.state === "closed", null, { timeout: 10000 });
  await ann.screenshot({ path: `${shots}/6-closed-ann.png` });
  console.log("browser ok");
} finally {
  clearTimeout(killer);
  await browser.close();
}
// stdin (the driver's answers) would keep Node alive.
process.exit(process.exitCode ?? 0);
