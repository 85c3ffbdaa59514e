// Real trackers against tally's POST /api/event in headless Chromium:
// Plausible's own npm package (@plausible-analytics/tracker) and tally's
// /js/script.js, each on a test page that sends a page view on load, a
// custom event with properties, and a page view on history navigation.
// The test pages are served by request interception on tally's origin (so
// the trackers post same-origin), under /__test/. Fails on console errors.
// Usage: node trackers.mjs BASE_URL SCREENSHOT.png
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const [base, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const here = fileURLToPath(new URL(".", import.meta.url));
const npmTracker = readFileSync(`${here}/node_modules/@plausible-analytics/tracker/plausible.js`, "utf8");
// A desktop Chrome's user agent: headless Chromium says "HeadlessChrome",
// which tally (like Plausible) drops as a bot.
const userAgent =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

const pages = {
  "/__test/npm/": `<!doctype html><html><head><title>npm tracker</title></head><body>
<h1>Plausible's npm tracker</h1>
<script type="module">
  import { init, track } from "/__test/plausible.js";
  init({ domain: "example.com", endpoint: "/api/event", captureOnLocalhost: true });
  window.signup = () => new Promise((resolve) =>
    track("Signup", { props: { plan: "pro" }, callback: resolve }));
</script></body></html>`,
  "/__test/script/": `<!doctype html><html><head><title>tally script</title>
<script defer data-domain="example.com" data-local src="/js/script.js"></script></head><body>
<h1>tally's script</h1>
<script>
  window.download = () => new Promise((resolve) =>
    tally("Download", { props: { file: "report.pdf" }, callback: resolve }));
</script></body></html>`,
};

const errors = [];
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ userAgent, viewport: { width: 1280, height: 800 } });
  await context.route(`${base}/__test/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/__test/plausible.js") {
      return route.fulfill({ contentType: "application/javascript", body: npmTracker });
    }
    const html = pages[path.replace(/second\/$/, "")];
    return html ? route.fulfill({ contentType: "text/html", body: html }) : route.fulfill({ status: 404 });
  });
  const sent = [];
  const results = {};
  for (const [path, fire] of [["/__test/npm/", "signup"], ["/__test/script/", "download"]]) {
    const page = await context.newPage();
    page.on("console", (m) => m.type() === "error" && errors.push(`${path} console: ${m.text()}`));
    page.on("pageerror", (e) => errors.push(`${path} page error: ${e.message}`));
    page.on("response", (r) => {
      if (r.url().endsWith("/api/event")) sent.push({ page: path, status: r.status(), body: r.request().postData() });
    });
    const loaded = page.waitForResponse((r) => r.url().endsWith("/api/event"));
    await page.goto(`${base}${path}`);
    await loaded;
    results[fire] = await page.evaluate(`window.${fire}()`);
    // A single-page app's navigation: a page view of the new path.
    const navigated = page.waitForResponse((r) => r.url().endsWith("/api/event"));
    await page.evaluate((p) => history.pushState({}, "", p + "second/"), path);
    await navigated;
    if (path === "/__test/script/") await page.screenshot({ path: screenshot });
    await page.close();
  }
  if (errors.length) throw new Error(errors.join("\n"));
  console.log(JSON.stringify({ sent, results }));
} finally {
  await browser.close();
}
