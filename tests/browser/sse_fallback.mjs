// The demo page where the WebSocket cannot open (the server's WebSocket path
// is not the page's /ws, as behind a proxy that refuses upgrades): after its
// attempts fail it reads the room read-only over Server-Sent Events, and shows
// a message a backend publishes meanwhile. Driven by
// tests/browser_page_falls_back_to_sse.rs, which publishes when this script
// prints "ready" and answers "published". Saves a screenshot.
// Usage: node sse_fallback.mjs HOST:PORT SCREENSHOT_DIR
import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [addr, shots] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const killer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 60000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  page.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await page.goto(`http://${addr}/?name=Ann&room=feed`);
  await page.waitForFunction(() => document.getElementById("bar").dataset.state === "sse", null, { timeout: 30000 });
  // The stream is open once its `connected` event came; the page shows
  // nothing for it, so wait for the server to count the stream instead.
  console.log("ready");
  const { value } = await lines.next();
  assert.equal(value, "published");
  await page.waitForFunction(() => document.getElementById("log").innerText.includes("order 17 shipped"), null, { timeout: 20000 });
  const text = await page.evaluate(() => document.getElementById("log").innerText);
  assert.equal(text.split("order 17 shipped").length - 1, 1, `shown once: ${text}`);
  await page.screenshot({ path: `${shots}/7-sse-fallback.png` });
  console.log("browser ok");
} finally {
  await browser.close();
  clearTimeout(killer);
}
