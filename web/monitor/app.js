// The monitor page: shows the token once to the server (which answers with a cookie), follows
// the live feed (server-sent events), draws the rounds with uPlot, polls the machine view while
// it is open, and sends the controls. Everything it loads comes from the process it watches;
// sizes, rates and times are written as the command line writes them (units.js is the CLI's).
// See docs/monitor.md.
import { formatBytes as bytes, formatMs, formatRate } from "/units.js";

const $ = (id) => document.getElementById(id);
const MACHINE_REFRESH_MS = 500;

const rate = (n) => (n === undefined || n === null ? "–" : formatRate(n));
const ms = (v) => (v === undefined || v === null ? "–" : formatMs(v));
const hex = (v, width = 2) => "0x" + (v >>> 0).toString(16).padStart(width, "0");

// ---- access ---------------------------------------------------------------------------------

async function login() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    // The token leaves the address bar at once; the server answers with a cookie derived from it.
    history.replaceState(null, "", location.pathname);
    await fetch("/api/login", { method: "POST", headers: { authorization: `Bearer ${token}` } });
  }
  const r = await fetch("/api/status");
  if (r.status === 401) {
    $("login").hidden = false;
    $("login").textContent = "This page needs the migration's token: open the address the command printed (it ends in #token=…).";
    $("feed").textContent = "not signed in";
    return undefined;
  }
  return r.json();
}

// ---- the migration view ---------------------------------------------------------------------

let chart;
let chartRounds = -1;

function roundsChart(points) {
  const el = $("rounds-chart");
  if (points.length === chartRounds) return;
  chartRounds = points.length;
  const xs = points.map((_, i) => i);
  const data = [xs, points.map((p) => p.pages), points.map((p) => (p.kind === "pre-copy" ? p.dirtiedPages : null))];
  const labels = points.map((p) => (p.kind === "pre-copy" ? String(p.round) : p.kind === "stop-and-copy" ? "stop" : "post"));
  if (!chart) {
    const bars = (align) => uPlot.paths.bars({ size: [0.4, 60], align });
    chart = new uPlot(
      {
        width: Math.max(300, el.clientWidth || 700),
        height: 240,
        scales: { x: { time: false, range: (u, lo, hi) => [lo - 0.6, hi + 0.6] } },
        axes: [{ label: "round", values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? (labels[t] ?? "") : "")) }, { label: "pages", size: 60 }],
        series: [
          { label: "round" },
          { label: "pages sent", stroke: "#3b6fb6", fill: "#3b6fb6cc", paths: bars(-1), points: { show: false } },
          { label: "pages dirtied", stroke: "#e08a2c", fill: "#e08a2ccc", paths: bars(1), points: { show: false } },
        ],
      },
      data,
      el,
    );
  } else {
    chart.axes[0].values = (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? (labels[t] ?? "") : ""));
    chart.setData(data);
  }
  el.dataset.points = String(points.length);
}

function meter(el, value, limit) {
  const ratio = limit > 0 && Number.isFinite(value) ? value / limit : 0;
  el.style.width = `${Math.min(100, ratio * 100)}%`;
  el.classList.toggle("over", ratio > 1);
}

function showSource(s) {
  $("status").textContent = s.status;
  $("phase").textContent = s.phase && !s.outcome ? `${s.phase}${s.phase === "pre-copy" ? `, round ${s.rounds}` : ""}` : "";
  $("workload").textContent = `${s.workload}, ${bytes(s.memoryBytes)}, ${s.technique}`;
  const pct = s.progressPercent;
  $("progress-bar").style.width = `${pct}%`;
  $("progress-value").textContent = `${pct.toFixed(1)} %`;
  $("progress").setAttribute("aria-valuenow", String(pct));
  $("sent").textContent = bytes(s.sentBytes);
  $("remaining").textContent = bytes(s.remainingBytes);
  $("rate").textContent = rate(s.bytesPerSec);
  $("pages-per-sec").textContent = s.pagesPerSec.toFixed(0);
  $("elapsed").textContent = ms(s.elapsedMs);
  $("rounds").textContent = String(s.rounds);
  $("throttle").textContent = `${s.throttlePercent} %`;
  $("faults").textContent = String(s.postcopyFaults);
  const bandwidth = s.bandwidthLimitBytesPerSec ?? s.bytesPerSec;
  $("dirty").textContent = `${rate(s.dirtyBytesPerSec)} of ${s.bandwidthLimitBytesPerSec ? `${rate(bandwidth)} (limit)` : `${rate(bandwidth)} (measured)`}`;
  meter($("dirty-meter"), s.dirtyBytesPerSec, bandwidth);
  $("expected-downtime").textContent = `${ms(s.expectedDowntimeMs)} of ${ms(s.downtimeLimitMs)}`;
  meter($("downtime-meter"), s.expectedDowntimeMs ?? 0, s.downtimeLimitMs);
  roundsChart(s.roundStats);
  const o = s.outcome;
  $("outcome").hidden = !o;
  for (const id of ["apply", "postcopy", "cancel"]) $(id).disabled = Boolean(o);
  if (!o) return;
  $("outcome-status").textContent = o.status;
  $("outcome-guest").textContent = o.guestOn;
  $("outcome-downtime").textContent = ms(o.downtimeMs);
  $("outcome-total").textContent = ms(o.totalMs);
  if (o.model) {
    const f = (m) => `${m.rounds} rounds, downtime ${ms(m.downtimeMs)}, total ${ms(m.totalMs)}`;
    $("outcome-predicted").textContent = f(o.model.predicted);
    $("outcome-measured").textContent = f(o.model.measured);
  }
  $("outcome-digest").textContent = o.digest ? `${o.digest.verdict}${o.digest.final ? ` — ${o.digest.final}` : ""}` : "–";
  $("outcome-digest").dataset.verdict = o.digest?.verdict ?? "";
  $("outcome-error-row").hidden = !o.error;
  $("outcome-error").textContent = o.error ?? "";
}

// ---- the destination's sessions -------------------------------------------------------------

function showListener(s) {
  $("listener-url").textContent = `listening on ${s.url}; ended: ${Object.entries(s.outcomes).map(([k, n]) => `${n} ${k}`).join(", ")}`;
  const body = $("sessions").tBodies[0];
  body.replaceChildren(
    ...s.sessions.map((x) => {
      const tr = document.createElement("tr");
      const detail = [x.digest ? `digest ${x.digest}` : "", x.reason ?? "", x.virtualNs !== undefined ? `at ${(x.virtualNs / 1e9).toFixed(3)} s virtual` : ""].filter(Boolean).join("; ");
      for (const [text, cls] of [[x.startedAt.slice(11, 19)], [x.peer], [x.state, `state-${x.state}`], [x.workload ?? ""], [x.memoryBytes !== undefined ? bytes(x.memoryBytes) : ""], [detail]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }),
  );
}

// ---- the machine view -----------------------------------------------------------------------

function table(el, head, rows) {
  const tr = (cells, tag) => {
    const row = document.createElement("tr");
    for (const c of cells) {
      const cell = document.createElement(tag);
      cell.textContent = String(c);
      row.append(cell);
    }
    return row;
  };
  el.replaceChildren(tr(head, "th"), ...rows.map((r) => {
    const row = tr(r.cells ?? r, "td");
    if (r.className) row.className = r.className;
    return row;
  }));
}

function showMachine(m) {
  $("machine-time").textContent = `${(m.virtualNs / 1e9).toFixed(3)} s`;
  $("machine-running").textContent = m.running ? "running" : "paused";
  $("machine-unavailable").hidden = !m.unavailable;
  $("machine-unavailable").textContent = m.unavailable ?? "";
  if (m.pic) {
    const keys = ["irr", "isr", "imr", "elcr", "icw1", "icw2", "icw3", "icw4", "readIsr", "specialMask", "lowestPriority"];
    table($("pic"), ["register", "master", "slave"], keys.map((k) => [k, fmt(m.pic.master[k]), fmt(m.pic.slave[k])]));
  }
  if (m.pit) {
    table($("pit"), ["channel", "status", "count", "mode", "rw", "reload"], m.pit.channels.map((c, i) => [i, hex(c.status), c.count, c.mode ?? "", c.rwMode ?? "", c.countRegister ?? ""]));
  }
  const apicKeys = ["id", "apicBase", "tpr", "svr", "ldr", "dfr", "esr", "icrLow", "initialCount", "currentCount", "divideConfig", "tscDeadline"];
  const lvtNames = ["LVT timer", "LVT thermal", "LVT perf", "LVT LINT0", "LVT LINT1", "LVT error"];
  table(
    $("lapic"),
    ["register", ...m.lapics.map((_, i) => `CPU ${i}`)],
    [
      ...apicKeys.map((k) => [k, ...m.lapics.map((l) => fmt(l[k], k === "apicBase" || k === "dfr" ? 8 : 2))]),
      ...lvtNames.map((name, j) => [name, ...m.lapics.map((l) => (l.lvt ? hex(l.lvt[j], 5) : ""))]),
      ...["isr", "irr", "tmr"].map((k) => [k, ...m.lapics.map((l) => vectors(l[k]))]),
    ],
  );
  if (m.ioapic) {
    table(
      $("ioapic"),
      ["pin", "vector", "delivery", "dest mode", "polarity", "trigger", "remote IRR", "mask", "destination"],
      m.ioapic.entries.map((e) => ({ className: e.masked ? "masked" : "", cells: [e.pin, hex(e.vector), e.deliveryMode, e.destinationMode, e.polarity, e.trigger, e.remoteIrr ? 1 : 0, e.masked ? "masked" : "", e.destination] })),
    );
  }
  const x = m.exits;
  table($("exits-reason"), ["reason", "exits"], [...Object.entries(x.byReason).map(([k, n]) => [k, n]), ["total", x.total]]);
  table($("exits-port"), ["port", "in", "out"], x.byPort.map((p) => [hex(p.port), p.in, p.out]));
  table($("exits-register"), ["register", "read", "write"], [...x.byRegister.map((r) => [`${r.region} ${hex(r.offset, 3)}`, r.read, r.write]), ...x.byMsr.map((r) => [`MSR ${r.msr}`, r.read, r.write])]);
}

function fmt(v, width = 2) {
  return typeof v === "number" ? hex(v, width) : v === undefined ? "" : String(v);
}

/** The set bits of a 256-bit vector register (eight 32-bit words) as vector numbers. */
function vectors(words) {
  if (!Array.isArray(words)) return "";
  const set = [];
  words.forEach((w, i) => { for (let b = 0; b < 32; b++) if (w & (1 << b)) set.push(hex(i * 32 + b)); });
  return set.join(" ") || "–";
}

let machineTimer;
async function refreshMachine() {
  try {
    const r = await fetch("/api/machine");
    if (r.ok) return showMachine(await r.json());
    $("machine-unavailable").hidden = false;
    $("machine-unavailable").textContent = (await r.json()).error;
  } catch {
    // The process has ended: the last view stays.
    clearInterval(machineTimer);
  }
}

// ---- navigation and controls ----------------------------------------------------------------

function show(view) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.view === view);
  for (const v of ["migration", "machine", "sessions"]) $(`view-${v}`).hidden = v !== view;
  clearInterval(machineTimer);
  if (view === "machine") {
    void refreshMachine();
    machineTimer = setInterval(() => void refreshMachine(), MACHINE_REFRESH_MS);
  }
}

async function control(action, body = {}) {
  const r = await fetch(`/api/control/${action}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const answer = await r.json();
  const el = $("control-message");
  el.textContent = r.ok ? answer.message : `refused: ${answer.error}`;
  el.dataset.ok = String(r.ok);
}

function wireControls() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
  $("set-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const body = {};
    const limit = $("set-downtime").value.trim();
    const bw = $("set-bandwidth").value.trim();
    if (limit) body["downtime-limit"] = limit;
    if (bw) body.bandwidth = bw;
    void control("set", body);
  });
  $("postcopy").addEventListener("click", () => void control("postcopy"));
  $("cancel").addEventListener("click", () => void control("cancel"));
}

async function main() {
  wireControls();
  const first = await login();
  if (!first) return;
  const source = first.role === "source";
  $("role").textContent = source ? "source" : "destination";
  document.querySelector('#tabs [data-view="machine"]').hidden = !source;
  document.querySelector('#tabs [data-view="migration"]').hidden = !source;
  document.querySelector('#tabs [data-view="sessions"]').hidden = source;
  show(source ? "migration" : "sessions");
  const render = source ? showSource : showListener;
  render(first);
  const feed = new EventSource("/api/events");
  let ended = false;
  feed.onopen = () => ($("feed").textContent = "live");
  feed.onmessage = (e) => {
    const s = JSON.parse(e.data);
    render(s);
    if (s.outcome) ended = true;
  };
  feed.onerror = () => {
    // The process ends once its migration has: the last figures stay on the page.
    $("feed").textContent = ended ? "ended: the figures are final" : "reconnecting…";
    if (ended) {
      feed.close();
      clearInterval(machineTimer);
    }
  };
}

void main();
