// The demo page over permessage-deflate in headless Chromium
// (tests/browser_chat_is_compressed_on_the_wire.rs): the page's connection
// negotiates the extension with a server run with `--compression on`, and a
// 10 KB chat message typed on one page reaches the other page intact. The
// driver then reads the server's compression counters on /metrics.
// Usage: node compressed_chat.mjs ADDR SCREENSHOT_DIR
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [addr, shots] = process.argv.slice(2);
const killer = setTimeout(() => { console.error("timed out"); process.exit(1); }, 90000);

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
  const open = (p) => p.waitForFunction(() => window.chat.state === "open" && document.querySelectorAll("#members li").length === 2, null, { timeout: 30000 });
  await open(ann);
  await open(bob);
  for (const p of [ann, bob]) {
    const extensions = await p.evaluate(() => window.chat.ws.extensions);
    assert.match(extensions, /^permessage-deflate/, `negotiated: ${extensions}`);
    assert.match(extensions, /server_no_context_takeover/);
    assert.match(extensions, /client_no_context_takeover/);
  }

  // 10 KB of chat-like text, typed into the page's form.
  const words = ["hello", "room", "message", "json", "wshub", "deflate", "chat", "again"];
  let text = "";
  for (let i = 0; text.length < 10240; i++) text += words[(i * 7) % words.length] + " " + i + " ";
  text = "long:" + text.slice(0, 10240);
  await ann.fill("#send-form input[name=text]", text);
  await ann.press("#send-form input[name=text]", "Enter");
  await bob.waitForFunction((t) => document.getElementById("log").innerText.includes(t), text, { timeout: 30000 });
  await bob.screenshot({ path: `${shots}/compressed-chat-bob.png` });
  console.log("browser ok");
} finally {
  clearTimeout(killer);
  await browser.close();
}
