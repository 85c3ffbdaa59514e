// tally's dashboard in headless Chromium: a site's view (cards, chart,
// tables) on a desktop and on a phone's screen, the period picker, and the
// stream explorer. Every request must stay on tally's origin (the page
// works offline), and the console must stay free of errors.
// Usage: node dashboard.mjs BASE_URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const errors = [];
const foreign = [];

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
const watch = async (context) => {
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (!url.startsWith(base)) {
      foreign.push(url);
      return route.abort();
    }
    return route.continue();
  });
  const page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && errors.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
  return page;
};
const rowsOf = (page, id) =>
  page.$$eval(`#${id} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));

try {
  // Desktop.
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await watch(desktop);
  await page.goto(`${base}/`);
  await page.waitForURL(/\/dashboard/);
  await page.waitForSelector("#t-pages tbody td.name");
  await page.waitForFunction(() => document.querySelectorAll("#site-chart path.series").length === 2);
  await page.waitForFunction(() => /^\d/.test(document.getElementById("realtime").textContent));
  const cards = await page.$$eval(".card .value", (vs) => vs.map((v) => v.textContent.trim()));
  const pages7d = await rowsOf(page, "t-pages");
  const sources = await rowsOf(page, "t-sources");
  const devices = await rowsOf(page, "t-devices");
  const countries = (await page.textContent("#t-countries")).trim();
  const points = await page.$$eval("#site-chart circle", (cs) => cs.length);
  await page.screenshot({ path: screenshot, fullPage: true });

  // The period picker: the hash and the numbers follow.
  await page.selectOption("#period", "day");
  await page.waitForFunction(() => location.hash.includes("period=day"));
  await page.waitForFunction(() => document.querySelectorAll("#site-chart circle").length === 48);
  const pagesDay = await rowsOf(page, "t-pages");

  // The explorer: web_events by page over 7 days.
  await page.goto(`${base}/dashboard#/explore?stream=web_events&agg=count&group=pathname&range=7d`);
  await page.waitForFunction(() => document.querySelectorAll("#x-table tbody td.name").length >= 2);
  await page.waitForFunction(() => document.querySelectorAll("#x-chart path.series").length >= 2);
  const explore = await rowsOf(page, "x-table");
  const caption = await page.textContent("#x-caption");

  // A phone: nothing wider than the screen.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const small = await watch(phone);
  await small.goto(`${base}/dashboard`);
  await small.waitForSelector("#t-pages tbody td.name");
  await small.waitForFunction(() => document.querySelectorAll("#site-chart path.series").length === 2);
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await small.screenshot({ path: screenshot.replace(/\.png$/, "-phone.png"), fullPage: true });

  if (errors.length || foreign.length) {
    console.error(JSON.stringify({ errors, foreign }));
    process.exit(1);
  }
  console.log(JSON.stringify({ cards, pages7d, pagesDay, sources, devices, countries, points, explore, caption, overflow }));
} finally {
  await browser.close();
}
