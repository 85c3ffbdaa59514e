// tally's dashboard: web analytics per site (Plausible's Stats API) and an
// explorer for any stream (the time-series API). No dependencies, no
// network beyond this server. State lives in the URL's hash:
//   #/site/<domain>?period=7d          #/site/<domain>?period=custom&from=..&to=..
//   #/explore?stream=<s>&agg=count&group=<field>&range=24h
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "tally-dashboard-key";
const SVG = "http://www.w3.org/2000/svg";

// ---- requests ---------------------------------------------------------

class NeedKey extends Error {}

async function api(path, body) {
  const headers = {};
  const key = localStorage.getItem(KEY);
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 || r.status === 403) throw new NeedKey();
  const text = await r.text();
  let v;
  try { v = JSON.parse(text); } catch { v = text; }
  if (!r.ok) throw new Error((v && v.error) || `${r.status} ${text}`);
  return v;
}

function showError(e) {
  if (e instanceof NeedKey) {
    $("key-form").hidden = false;
    return;
  }
  const el = $("error");
  el.textContent = String(e.message || e);
  el.hidden = false;
}

// ---- formatting -------------------------------------------------------

function fmt(n) {
  if (n === null || n === undefined) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1).replace(/\.0$/, "") + "B";
  if (a >= 1e6) return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

function duration(s) {
  if (!s) return "0s";
  const m = Math.floor(s / 60);
  return m ? `${m}m ${Math.round(s % 60)}s` : `${Math.round(s)}s`;
}

// ---- charts -----------------------------------------------------------

const COLORS = ["#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6"];

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// A line chart of `series` ([{name, values}]) over `labels`.
function lineChart(svg, labels, series) {
  svg.replaceChildren();
  const w = svg.clientWidth || 600;
  const h = svg.clientHeight || 260;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const pad = { l: 44, r: 12, t: 24, b: 26 };
  const max = Math.max(1, ...series.flatMap((s) => s.values.map((v) => v || 0)));
  const x = (i) => pad.l + (labels.length < 2 ? 0 : (i * (w - pad.l - pad.r)) / (labels.length - 1));
  const y = (v) => h - pad.b - ((v || 0) / max) * (h - pad.t - pad.b);
  const grid = el("g", { class: "grid" }, svg);
  const axis = el("g", { class: "axis" }, svg);
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    el("line", { x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v) }, grid);
    el("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = fmt(Math.round(v));
  }
  const every = Math.max(1, Math.ceil(labels.length / Math.max(2, Math.floor((w - pad.l) / 90))));
  labels.forEach((l, i) => {
    if (i % every === 0) {
      const anchor = i === 0 ? "start" : i === labels.length - 1 ? "end" : "middle";
      el("text", { x: x(i), y: h - 8, "text-anchor": anchor }, axis).textContent = l;
    }
  });
  series.forEach((s, n) => {
    const color = COLORS[n % COLORS.length];
    const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
    el("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series" }, svg);
    s.values.forEach((v, i) => {
      const c = el("circle", { cx: x(i), cy: y(v), r: labels.length > 60 ? 1.5 : 3, fill: color }, svg);
      el("title", {}, c).textContent = `${s.name} · ${labels[i]}: ${fmt(v || 0)}`;
    });
    const lg = el("g", { class: "legend" }, svg);
    const lx = pad.l + n * 150;
    el("rect", { x: lx, y: 6, width: 10, height: 10, fill: color }, lg);
    el("text", { x: lx + 14, y: 15 }, lg).textContent = s.name;
  });
}

// A table of `rows` ([name, value]) with bars proportional to the value.
function barTable(table, head, rows, format = fmt) {
  table.replaceChildren();
  const thead = table.createTHead().insertRow();
  thead.innerHTML = `<th></th><th class="num"></th>`;
  thead.cells[0].textContent = head[0];
  thead.cells[1].textContent = head[1];
  const body = table.createTBody();
  if (!rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = 2;
    td.className = "muted";
    td.textContent = "Nothing in this period";
    return;
  }
  const max = Math.max(1, ...rows.map((r) => r[1]));
  for (const [name, value] of rows) {
    const tr = body.insertRow();
    const a = tr.insertCell();
    a.className = "name";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * value) / max}%`;
    const label = document.createElement("span");
    label.textContent = name;
    label.title = name;
    a.append(bar, label);
    const b = tr.insertCell();
    b.className = "num";
    b.textContent = format(value);
  }
}

// ---- routing ----------------------------------------------------------

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
}

function go(path, params) {
  const q = new URLSearchParams(params).toString();
  location.hash = `#${path}${q ? "?" + q : ""}`;
}

let sites = [];
let realtimeTimer = null;

async function render() {
  $("error").hidden = true;
  $("key-form").hidden = true;
  clearInterval(realtimeTimer);
  const { parts, params } = route();
  for (const v of ["site-view", "explore-view", "no-sites"]) $(v).hidden = true;
  try {
    if (!sites.length) await loadSites();
    if (parts[0] === "explore") return await explore(params);
    const site = parts[0] === "site" ? parts[1] : sites[0];
    if (!site) {
      $("no-sites").hidden = false;
      return;
    }
    await siteView(site, params);
  } catch (e) {
    showError(e);
  }
}

// Whether the server looks up visitors' countries (a GeoIP database).
let countries = false;

// Without a country database every visit's country is unknown: say how to
// get countries rather than show one "(none)" row.
function noCountries(table) {
  table.replaceChildren();
  const td = table.createTBody().insertRow().insertCell();
  td.className = "muted";
  td.id = "no-countries";
  td.innerHTML =
    "Countries need an IP-to-country database: start tally with " +
    "<code>--web-geoip FILE</code> naming a MaxMind-format (.mmdb) country database, " +
    "such as MaxMind's GeoLite2-Country or DB-IP's free IP to Country Lite " +
    "(docs/web.md, “Countries”).";
}

async function loadSites() {
  try {
    const answer = await api("/v1/sites");
    sites = answer.sites.map((s) => s.domain);
    countries = answer.countries;
  } catch (e) {
    // Web analytics turned off: the explorer still works.
    if (e instanceof NeedKey) throw e;
    sites = [];
  }
  const sel = $("site");
  sel.replaceChildren(...sites.map((d) => new Option(d, d)));
  sel.hidden = !sites.length;
}

// ---- a site -----------------------------------------------------------

function statsQuery(site, params, extra) {
  const q = new URLSearchParams({ site_id: site, period: params.get("period") || "7d", ...extra });
  if (q.get("period") === "custom") q.set("date", `${params.get("from")},${params.get("to")}`);
  return q.toString();
}

async function siteView(site, params) {
  $("site-view").hidden = false;
  $("site").value = site;
  const period = params.get("period") || "7d";
  $("period").value = period;
  $("custom").hidden = period !== "custom";
  if (period === "custom") {
    $("from").value = params.get("from") || "";
    $("to").value = params.get("to") || "";
    if (!params.get("from") || !params.get("to")) return;
  }
  const realtime = async () => {
    try {
      $("realtime").textContent = fmt(await api(`/api/v1/stats/realtime/visitors?site_id=${encodeURIComponent(site)}`));
    } catch (e) {
      showError(e);
    }
  };
  realtime();
  realtimeTimer = setInterval(realtime, 15000);

  const metrics = "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration";
  const breakdown = (property, metric = "visitors") =>
    api(`/api/v1/stats/breakdown?${statsQuery(site, params, { property, metrics: metric, limit: "10" })}`);
  const [agg, series, pages, sources, byCountry, devices, browsers, entry] = await Promise.all([
    api(`/api/v1/stats/aggregate?${statsQuery(site, params, { metrics })}`),
    api(`/api/v1/stats/timeseries?${statsQuery(site, params, { metrics: "visitors,pageviews" })}`),
    breakdown("event:page", "pageviews"),
    breakdown("visit:source"),
    breakdown("visit:country"),
    breakdown("visit:device"),
    breakdown("visit:browser"),
    breakdown("visit:entry_page", "visits"),
  ]);
  for (const m of metrics.split(",")) {
    const v = agg.results[m].value;
    $(`m-${m}`).textContent =
      m === "bounce_rate" ? `${v}%` : m === "visit_duration" ? duration(v) : fmt(v);
  }
  const rows = series.results;
  lineChart(
    $("site-chart"),
    rows.map((r) => r.date.replace(/:00:00$/, "h").slice(period === "day" ? 11 : 5)),
    [
      { name: "Visitors", values: rows.map((r) => r.visitors) },
      { name: "Page views", values: rows.map((r) => r.pageviews) },
    ],
  );
  const table = (id, head, v, key, metric) =>
    barTable($(id), head, v.results.map((r) => [r[key], r[metric]]));
  table("t-pages", ["Page", "Views"], pages, "page", "pageviews");
  table("t-sources", ["Source", "Visitors"], sources, "source", "visitors");
  if (countries) {
    table("t-countries", ["Country", "Visitors"], byCountry, "country", "visitors");
  } else {
    noCountries($("t-countries"));
  }
  table("t-devices", ["Device", "Visitors"], devices, "device", "visitors");
  table("t-browsers", ["Browser", "Visitors"], browsers, "browser", "visitors");
  table("t-entry", ["Entry page", "Visits"], entry, "entry_page", "visits");
}

// ---- the stream explorer ----------------------------------------------

let streams = [];

async function explore(params) {
  $("explore-view").hidden = false;
  if (!streams.length) streams = (await api("/v1/streams")).streams;
  const sel = $("x-stream");
  sel.replaceChildren(...streams.map((s) => new Option(`${s.name} (${fmt(s.rows)})`, s.name)));
  if (!streams.length) {
    $("x-caption").textContent = "No streams yet";
    return;
  }
  const stream = streams.find((s) => s.name === params.get("stream")) || streams[0];
  sel.value = stream.name;
  const numbers = stream.columns.filter((c) => c.type === "number").map((c) => c.name);
  const texts = stream.columns.filter((c) => c.type !== "number").map((c) => c.name);
  const aggs = ["count", ...numbers.flatMap((n) => [`sum(${n})`, `avg(${n})`, `p95(${n})`]), ...texts.map((t) => `uniq(${t})`)];
  const agg = aggs.includes(params.get("agg")) ? params.get("agg") : "count";
  $("x-agg").replaceChildren(...aggs.map((a) => new Option(a, a)));
  $("x-agg").value = agg;
  const group = texts.includes(params.get("group")) ? params.get("group") : "";
  $("x-group").replaceChildren(new Option("(nothing)", ""), ...texts.map((t) => new Option(t, t)));
  $("x-group").value = group;
  const range = params.get("range") || "24h";
  $("x-range").value = range;
  const interval = { "1h": "1m", "24h": "1h", "7d": "1d", "30d": "1d" }[range] || "1h";
  const answer = await api("/v1/query", {
    stream: stream.name,
    from: `now-${range}`,
    to: "now",
    interval,
    aggregates: [agg],
    group_by: group ? [group] : [],
    limit: 5,
    fill: "zero",
  });
  const name = (s) => (s.other ? "other" : s.group ? String(Object.values(s.group)[0] ?? "(none)") : agg);
  const labels = (answer.series[0]?.points || []).map((p) =>
    interval === "1d" ? p.t.slice(5, 10) : p.t.slice(11, 16));
  lineChart($("x-chart"), labels, answer.series.map((s) => ({ name: name(s), values: s.points.map((p) => p[agg]) })));
  $("x-caption").textContent = `${agg} of ${stream.name}, last ${range}${group ? ` by ${group}` : ""} (${answer.source})`;
  $("x-table-title").textContent = group ? `Top ${group}` : "Total";
  barTable(
    $("x-table"),
    [group || "stream", agg],
    answer.series.length && group
      ? answer.series.map((s) => [name(s), s.totals[agg] || 0])
      : [[stream.name, answer.totals[agg] || 0]],
  );
}

// ---- wiring -----------------------------------------------------------

function siteParams() {
  const p = { period: $("period").value };
  if (p.period === "custom") {
    p.from = $("from").value;
    p.to = $("to").value;
  }
  return p;
}

document.addEventListener("DOMContentLoaded", () => {
  $("site").addEventListener("change", () => go(`/site/${encodeURIComponent($("site").value)}`, siteParams()));
  $("period").addEventListener("change", () => {
    $("custom").hidden = $("period").value !== "custom";
    if ($("period").value !== "custom") go(`/site/${encodeURIComponent($("site").value)}`, siteParams());
  });
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => {
      if ($("from").value && $("to").value) go(`/site/${encodeURIComponent($("site").value)}`, siteParams());
    });
  }
  const exploreParams = () => ({
    stream: $("x-stream").value, agg: $("x-agg").value, group: $("x-group").value, range: $("x-range").value,
  });
  $("x-stream").addEventListener("change", () => go("/explore", { stream: $("x-stream").value }));
  for (const id of ["x-agg", "x-group", "x-range"]) {
    $(id).addEventListener("change", () => go("/explore", exploreParams()));
  }
  $("key-form").querySelector("form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem(KEY, new FormData(e.target).get("key"));
    sites = [];
    render();
  });
  window.addEventListener("hashchange", render);
  render();
});
