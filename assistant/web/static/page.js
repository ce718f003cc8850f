// The add-on's page. Every URL is relative (the page may live under HA's ingress path),
// and model output only ever reaches the DOM through textContent, never as markup.
"use strict";

const HOUR_S = 3600;
const SERIES = [
  { key: "cpu_percent", title: "CPU", unit: "%" },
  { key: "memory_used_mb", title: "Memory used", unit: "MB" },
  { key: "worker_rss_mb", title: "Worker RSS", unit: "MB" },
  { key: "tokens_per_s", title: "Tokens/s", unit: "tok/s" },
  { key: "queue_depth", title: "Queue depth", unit: "" },
  { key: "cpu_temp_c", title: "Temperature", unit: "°C" },
];

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fillTable(table, head, rows) {
  table.replaceChildren();
  const tr = el("tr");
  for (const h of head) tr.append(el("th", h));
  table.append(tr);
  for (const row of rows) {
    const line = el("tr");
    for (const cell of row) {
      if (cell instanceof Node) {
        const td = el("td");
        td.append(cell);
        line.append(td);
      } else {
        line.append(el("td", cell === null || cell === undefined ? "—" : cell));
      }
    }
    table.append(line);
  }
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

// --- plots ----------------------------------------------------------------------------

const plots = { data: null, charts: [] };

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function chartOptions(series, width) {
  const text = cssVar("--muted");
  const grid = cssVar("--line");
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
  return {
    width,
    height: 140,
    legend: { show: false },
    cursor: { y: false },
    scales: { x: { time: true } },
    axes: [axis, { ...axis, size: 48 }],
    series: [
      {},
      { label: series.title, stroke: cssVar("--accent"), width: 1.5, points: { show: false },
        fill: cssVar("--accent") + "22" },
    ],
  };
}

function plotWidth(node) {
  return Math.max(200, Math.floor(node.getBoundingClientRect().width));
}

function buildPlots(columns) {
  plots.data = columns;
  const holder = $("plots");
  holder.replaceChildren();
  plots.charts = [];
  // All boxes first, so each chart is sized to its own grid cell.
  const boxes = SERIES.map((series) => {
    const box = el("div", null, "plot");
    box.dataset.series = series.key;
    box.append(el("div", `${series.title}${series.unit ? ` (${series.unit})` : ""}`, "title"));
    holder.append(box);
    return box;
  });
  SERIES.forEach((series, i) => {
    const box = boxes[i];
    const known = columns[series.key].some((v) => v !== null);
    if (series.key === "cpu_temp_c" && !known && columns.t.length > 0) {
      box.append(el("div", "not readable on this machine", "none"));
      return;
    }
    const data = [columns.t, columns[series.key]];
    const chart = new uPlot(chartOptions(series, plotWidth(box)), data, box);
    plots.charts.push({ key: series.key, chart, box });
    box.dataset.points = String(columns.t.length);
  });
}

function addPoint(point) {
  const data = plots.data;
  for (const key of ["t", ...SERIES.map((s) => s.key)]) data[key].push(point[key] ?? null);
  while (data.t.length > 0 && data.t[0] < point.t - HOUR_S) {
    for (const key of Object.keys(data)) data[key].shift();
  }
  for (const { key, chart, box } of plots.charts) {
    chart.setData([data.t, data[key]]);
    box.dataset.points = String(data.t.length);
  }
  const cpu = point.cpu_percent === null ? "—" : `${point.cpu_percent.toFixed(0)} % CPU`;
  const tps = point.tokens_per_s === null ? "" : ` · ${point.tokens_per_s} tok/s`;
  $("live").textContent = `live · ${cpu}${tps}`;
}

function resizePlots() {
  for (const { chart, box } of plots.charts) chart.setSize({ width: plotWidth(box), height: 140 });
}

async function startPlots() {
  buildPlots(await getJson("api/history"));
  const source = new EventSource("api/events");
  source.onopen = () => $("live").classList.add("on");
  source.onerror = () => {
    $("live").classList.remove("on");
    $("live").textContent = "reconnecting…";
  };
  source.onmessage = (message) => addPoint(JSON.parse(message.data));
  let pending = 0;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(resizePlots, 150);
  });
}

// --- plan, doctor, sandbox, models ----------------------------------------------------

function mb(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value)} MB`;
}

function params(n) {
  if (!n) return "—";
  return n >= 1e6 ? `${(n / 1e6).toFixed(0)} M` : n.toLocaleString("en");
}

function showInfo(info) {
  const model = info.model;
  $("summary").textContent = `${info.version} · ${model.id} (${model.precision}) · tier ${info.plan.tier}`;
  fillTable($("models"), ["model", "in use", "precision", "parameters", "size"],
    info.models.map((m) => [m.id, m.in_use ? "yes" : "", m.precision,
      params(m.params), mb(m.file_mb)]));
  const reasons = info.plan.reasons || {};
  fillTable($("plan"), ["", "value", "why"],
    Object.keys(reasons).map((key) => {
      const value = info.plan[key];
      return [key, typeof value === "string" ? value : JSON.stringify(value), reasons[key]];
    }));
  fillTable($("doctor"), ["requirement", "", "detected"],
    info.requirements.map((r) => [r.requirement,
      el("span", r.verdict, r.verdict === "ok" ? "ok" : r.verdict === "below" ? "bad" : "muted"),
      r.detected]));
  const sandbox = info.sandbox;
  const layers = sandbox.enabled
    ? sandbox.layers.map((l) => [l.layer,
      el("span", l.state, l.state === "active" ? "ok" : "muted"), l.detail])
    : sandbox.enabled === null ? [["sandbox", "the worker is starting", ""]]
      : [["sandbox", "disabled (sandbox.enabled: false): the model runs unconfined", ""]];
  fillTable($("sandbox"), ["layer", "state", "what it does"], layers);
  $("sandbox-order").textContent = sandbox.order ? `order: ${sandbox.order}` : "";
}

// --- recent requests ------------------------------------------------------------------

async function refreshRequests() {
  const log = await getJson("api/requests");
  const head = ["id", "front end", "latency", "tok/s", "finish", "error"];
  if (log.keep_prompts) head.push("prompt");
  fillTable($("requests"), head, log.requests.map((r) => {
    const row = [r.id, r.front_end, r.latency_ms === null ? null : `${Math.round(r.latency_ms)} ms`,
      r.tokens_per_s, r.finish_reason, r.error_code];
    if (log.keep_prompts) row.push(r.prompt);
    return row;
  }));
}

// --- try it ---------------------------------------------------------------------------

const trying = { id: null, abort: null };

function setRunning(running) {
  $("try-send").disabled = running;
  $("try-cancel").disabled = !running;
}

function onTryLine(event) {
  const status = $("try-status");
  if (event.type === "start") {
    trying.id = event.id;
    status.textContent = `running ${event.id}…`;
  } else if (event.type === "delta") {
    $("try-out").append(document.createTextNode(event.text));
  } else if (event.type === "tool_call") {
    $("try-calls").append(el("div", `${event.name}(${JSON.stringify(event.arguments)})`, "call"));
  } else if (event.type === "final") {
    status.dataset.finish = event.error ? event.error.code : event.finish_reason;
    status.textContent = event.error
      ? `error ${event.error.code}: ${event.error.message}`
      : `${event.finish_reason} · ${event.usage.completion_tokens} tokens · ` +
        `${event.timing.tokens_per_s} tok/s · first token ${Math.round(event.timing.first_token_ms)} ms`;
  }
}

async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 1);
      if (line.trim()) onLine(JSON.parse(line));
    }
  }
}

async function tryIt(submit) {
  submit.preventDefault();
  const text = $("try-text").value;
  if (!text.trim()) return;
  $("try-out").textContent = "";
  $("try-calls").replaceChildren();
  delete $("try-status").dataset.finish;
  trying.abort = new AbortController();
  trying.id = null;
  setRunning(true);
  const body = { text, tools: $("try-tools").checked };
  const max = parseInt($("try-max").value, 10);
  if (max > 0) body.max_tokens = max;
  try {
    const response = await fetch("api/try", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: trying.abort.signal,
    });
    if (!response.ok) {
      $("try-status").textContent = `refused: ${response.status} ${await response.text()}`;
      return;
    }
    await readLines(response, onTryLine);
  } catch (err) {
    if (err.name !== "AbortError") $("try-status").textContent = `failed: ${err.message}`;
  } finally {
    setRunning(false);
    trying.id = null;
    refreshRequests().catch(() => {});
  }
}

async function cancelTry() {
  $("try-cancel").disabled = true;
  if (trying.id === null) {
    // Not started yet: dropping the stream cancels it on the server.
    if (trying.abort) trying.abort.abort();
    $("try-status").textContent = "cancelled";
    return;
  }
  // The stream stays open and ends with the final (finish reason "cancelled").
  await fetch(`api/try/${encodeURIComponent(trying.id)}/cancel`, { method: "POST" });
}

// --- start ----------------------------------------------------------------------------

function start() {
  $("try-form").addEventListener("submit", tryIt);
  $("try-cancel").addEventListener("click", () => { cancelTry().catch(() => {}); });
  getJson("api/info").then(showInfo).catch((err) => { $("summary").textContent = err.message; });
  startPlots().catch((err) => { $("live").textContent = `plots unavailable: ${err.message}`; });
  refreshRequests().catch(() => {});
  setInterval(() => { refreshRequests().catch(() => {}); }, 3000);
}

start();
