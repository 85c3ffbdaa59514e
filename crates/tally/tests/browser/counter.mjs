// The counter page in headless Chromium: register, click, see the number
// go up, click again and see the refusal; a second page (another browser
// profile) sees the new value live; log out and in. Fails on any console
// error. Usage: node counter.mjs BASE_URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const errors = [];

// Chromium logs every 4xx answer to fetch; the refusals this test provokes
// (401 logged out, 429 too soon) are expected, anything else is an error.
const expected = /^Failed to load resource: the server responded with a status of (401|429) /;

function watch(page, who) {
  page.on("console", (m) => {
    if (m.type() === "error" && !expected.test(m.text())) errors.push(`${who} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${who} page error: ${e.message}`));
}

async function value(page) {
  return Number(await page.textContent("#value"));
}

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const a = await (await browser.newContext()).newPage();
  const b = await (await browser.newContext()).newPage();
  watch(a, "page A");
  watch(b, "page B");
  for (const p of [a, b]) {
    await p.goto(`${base}/counter/main`);
    await p.waitForFunction(() => document.getElementById("live").textContent === "live");
  }
  const user = `browser${Date.now() % 100000}`;
  await a.fill("#register-form input[name=username]", user);
  await a.fill("#register-form input[name=password]", "correct horse");
  await a.click("#register-form button[type=submit]");
  await a.waitForSelector("#signed-in:not([hidden])");
  const who = await a.textContent("#who");
  if (who !== user) throw new Error(`logged in as ${who}, expected ${user}`);

  const before = await value(a);
  await a.click("#inc");
  await a.waitForFunction((v) => Number(document.getElementById("value").textContent) === v, before + 1);
  // The live feed can show the new value before the click's own answer
  // sets the message: wait for the message (then check it, to say what came).
  await a
    .waitForFunction(() => document.getElementById("message").textContent.includes("again at"), null, { timeout: 5000 })
    .catch(() => {});
  const thanks = await a.textContent("#message");
  if (!thanks.includes("again at")) throw new Error(`after a click: ${thanks}`);
  // The other page sees it live, within a second.
  const t = Date.now();
  await b.waitForFunction((v) => Number(document.getElementById("value").textContent) === v, before + 1, { timeout: 1000 });
  const liveMs = Date.now() - t;

  await a.click("#inc");
  await a.waitForFunction(() => document.getElementById("message").textContent.startsWith("Not yet"));
  const refusal = await a.textContent("#message");
  if ((await value(a)) !== before + 1) throw new Error("a refused click moved the number");

  await a.screenshot({ path: screenshot, fullPage: true });

  await a.click("#logout-form button");
  await a.waitForSelector("#signed-out:not([hidden])");
  await a.click("#inc");
  await a.waitForFunction(() => document.getElementById("message").textContent.startsWith("Log in"));
  await a.fill("#login-form input[name=username]", user);
  await a.fill("#login-form input[name=password]", "wrong horse!");
  await a.click("#login-form button[type=submit]");
  await a.waitForFunction(() => document.getElementById("message").textContent === "wrong username or password");
  await a.fill("#login-form input[name=username]", user);
  await a.fill("#login-form input[name=password]", "correct horse");
  await a.click("#login-form button[type=submit]");
  await a.waitForSelector("#signed-in:not([hidden])");

  if (errors.length) throw new Error(errors.join("\n"));
  console.log(JSON.stringify({ user, before, after: before + 1, live_ms: liveMs, refusal }));
} finally {
  await browser.close();
}
