// The demo page's liveness rules in headless Chromium. Two servers, each
// behind a TCP proxy the driver controls (tests/browser_page_notices_a_silent_server.rs):
// A announces a 1 s heartbeat, B a 60 s one.
//  1. A goes silent (its proxy swallows what the server sends): the page
//     leaves "connected" within 2 heartbeats, says why, and reconnects once
//     A speaks again.
//  2. B goes silent and the page becomes visible again (`visibilitychange`,
//     as after a laptop sleep): the page checks at once instead of waiting
//     for its 60 s heartbeat, and leaves "connected".
//  3. While its attempts are refused (the client pointed at ADDR_C, a proxy
//     that refuses every connection) the page waits out its backoff; an
//     `online` event makes it retry at once, long before its next attempt.
// The driver answers each request on stdout ("swallow a", "unswallow a",
// "swallow b", "unswallow b") with "done" on stdin.
// Usage: node silent_server.mjs ADDR_A ADDR_B ADDR_C SCREENSHOT_DIR
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [addrA, addrB, addrC, shots] = process.argv.slice(2);
const HEARTBEAT_A = 1000;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(what) {
  console.log(what);
  const { value } = await lines.next();
  assert.equal(value, "done", `the driver answered ${value} to ${what}`);
}
const killer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 110000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  // The page follows the client's state events: it polls nothing.
  await context.addInitScript(() => {
    window.__intervals = 0;
    const setInterval = window.setInterval;
    window.setInterval = function (...args) { window.__intervals += 1; return setInterval.apply(this, args); };
  });
  // Records when the page's client leaves "open", and what its log says.
  const watch = (p) => p.evaluate(() => {
    window.__left = null;
    window.chat.on("state", (e) => { if (e.previous === "open" && !window.__left) window.__left = { at: Date.now(), state: e.state }; });
  });
  // Open, joined, and the member list read again (after a reconnection too).
  const opened = (p) => p.waitForFunction(() => window.chat.state === "open" && document.getElementById("bar").dataset.state === "open"
    && document.getElementById("log").innerText.includes("you joined") && document.querySelector("#members li:not(.offline)"), null, { timeout: 30000 });

  // 1. A goes silent.
  const ann = await context.newPage();
  ann.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await ann.goto(`http://${addrA}/?name=Ann&room=lobby`);
  await opened(ann);
  assert.equal(await ann.evaluate(() => window.chat.hello.heartbeatMs), HEARTBEAT_A);
  await watch(ann);
  await ask("swallow a");
  const silentFrom = await ann.evaluate(() => Date.now());
  await ann.waitForFunction(() => window.__left, null, { timeout: 20000 });
  const left = await ann.evaluate(() => window.__left);
  const took = left.at - silentFrom;
  console.log(`left "connected" ${took} ms after the server went silent (heartbeat ${HEARTBEAT_A} ms)`);
  // Two heartbeats (one idle, one waiting for the ping's ack), plus 1.5 s
  // for timers late on a loaded machine.
  assert.ok(took <= 2 * HEARTBEAT_A + 1500, `left after ${took} ms`);
  await ann.waitForFunction(() => document.getElementById("log").innerText.includes("connection lost: no reply to a ping"), null, { timeout: 10000 });
  await ann.screenshot({ path: `${shots}/8-silent-server-left-ann.png` });
  await ask("unswallow a");
  await opened(ann);
  await ann.screenshot({ path: `${shots}/9-silent-server-reconnected-ann.png` });
  assert.equal(await ann.evaluate(() => window.__intervals), 0, "the page set an interval timer");

  // 2. B goes silent; the page shows again.
  const bob = await context.newPage();
  bob.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await bob.goto(`http://${addrB}/?name=Bob&room=lobby`);
  await opened(bob);
  const heartbeatB = await bob.evaluate(() => window.chat.hello.heartbeatMs);
  await watch(bob);
  await ask("swallow b");
  const shownAt = await bob.evaluate(() => {
    if (document.visibilityState !== "visible") throw new Error("the page is not visible");
    document.dispatchEvent(new Event("visibilitychange"));
    return Date.now();
  });
  await bob.waitForFunction(() => window.__left, null, { timeout: 30000 });
  const bobLeft = (await bob.evaluate(() => window.__left)).at - shownAt;
  console.log(`left "connected" ${bobLeft} ms after visibilitychange (heartbeat ${heartbeatB} ms)`);
  assert.ok(bobLeft < heartbeatB / 2, `left after ${bobLeft} ms: the heartbeat, not the visibility check`);
  await bob.screenshot({ path: `${shots}/10-visible-again-bob.png` });

  // 3. Refused; `online` retries at once.
  await bob.evaluate((c) => { window.__url = window.chat.url; window.chat.url = `ws://${c}/ws`; }, addrC);
  await ask("unswallow b");
  // Attempts fail at once; wait (bounded) for a delay of at least 1.5 s.
  await bob.waitForFunction(() => window.chat.state === "reconnecting" && window.chat.nextAttemptAt - Date.now() > 1500, null, { timeout: 60000, polling: 20 });
  // In one turn of the page: point back at B, go online, see the attempt start.
  const retry = await bob.evaluate(() => {
    let seen = null;
    const planned = window.chat.nextAttemptAt;
    window.chat.url = window.__url;
    window.chat.once("state", (e) => { seen = { state: e.state, early: planned - Date.now() }; });
    window.dispatchEvent(new Event("online"));
    return seen;
  });
  assert.ok(retry, "online started no attempt");
  console.log(`online: ${retry.state} ${retry.early} ms before the planned attempt`);
  assert.equal(retry.state, "connecting");
  assert.ok(retry.early > 1000, JSON.stringify(retry));
  await opened(bob);
  await bob.screenshot({ path: `${shots}/11-online-retried-bob.png` });
  console.log("browser ok");
} finally {
  clearTimeout(killer);
  await browser.close();
}
process.exit(process.exitCode ?? 0);
