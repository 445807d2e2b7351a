// frankensweep dashboard: token, JSON API writes, table sorting, live updates, Plotly charts.
"use strict";

const FS = (() => {
  const TOKEN_KEY = "frankensweep.token";
  const POLL_MS = 2000;

  // -- API token: entered once, kept in localStorage, sent as Bearer on writes ----------------
  function token() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function showTokenState() {
    const state = document.getElementById("token-state");
    if (state) state.textContent = token() ? "API token ✓" : "API token";
  }

  function askForToken(message) {
    const box = document.getElementById("token-box");
    const msg = document.getElementById("token-msg");
    if (box) box.open = true;
    if (msg) msg.textContent = message;
    const input = document.getElementById("api-token");
    if (input) input.focus();
  }

  let tokenReady = false;

  function initToken() {
    const form = document.getElementById("token-form");
    if (!form || tokenReady) return;
    tokenReady = true;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = document.getElementById("api-token").value.trim();
      if (value) localStorage.setItem(TOKEN_KEY, value);
      document.getElementById("api-token").value = "";
      document.getElementById("token-msg").textContent = value ? "saved" : "";
      showTokenState();
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      document.getElementById("token-msg").textContent = "forgotten";
      showTokenState();
    });
    showTokenState();
  }

  async function write(method, url, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token()) headers.Authorization = "Bearer " + token();
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      askForToken(
        token()
          ? "The server refused this token: enter the right one and try again."
          : "This server needs an API token for writes: enter it and try again."
      );
    }
    return response;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  // -- sortable tables (client-side); the reference row stays on top ---------------------------
  function cellValue(row, key, type) {
    const raw = row.getAttribute("data-" + key);
    if (type === "num") {
      if (raw === null || raw === "") return null;
      const n = Number(raw);
      return Number.isNaN(n) ? null : n;
    }
    return raw || "";
  }

  function sortTable(table, key, type, dir) {
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const pinned = rows.filter((r) => r.classList.contains("reference"));
    const rest = rows.filter((r) => !r.classList.contains("reference"));
    rest.sort((a, b) => {
      const x = cellValue(a, key, type);
      const y = cellValue(b, key, type);
      if (x === null && y === null) return 0;
      if (x === null) return 1; // missing values last, whatever the direction
      if (y === null) return -1;
      const c = type === "num" ? x - y : String(x).localeCompare(String(y));
      return dir === "asc" ? c : -c;
    });
    for (const r of pinned.concat(rest)) body.appendChild(r);
    for (const th of table.tHead.rows[0].cells) th.classList.remove("sort-asc", "sort-desc");
    const th = table.tHead.querySelector('th[data-key="' + key + '"]');
    if (th) th.classList.add(dir === "asc" ? "sort-asc" : "sort-desc");
    table.dataset.sortKey = key;
    table.dataset.sortType = type;
    table.dataset.sortDir = dir;
  }

  let sortState = null; // survives live refreshes of the table

  function initSort(table) {
    if (!table) return;
    for (const th of table.tHead.rows[0].cells) {
      if (!th.dataset.key) continue;
      th.classList.add("sortable-col");
      th.addEventListener("click", () => {
        const same = table.dataset.sortKey === th.dataset.key;
        const dir = same && table.dataset.sortDir === "asc" ? "desc" : "asc";
        sortState = { key: th.dataset.key, type: th.dataset.type || "text", dir };
        sortTable(table, sortState.key, sortState.type, dir);
      });
    }
    if (sortState) sortTable(table, sortState.key, sortState.type, sortState.dir);
  }

  // -- live updates: poll the JSON API every 2 s, refresh the server-rendered part on change -----
  async function refreshFragment(live) {
    const response = await fetch(live.dataset.fragment, { headers: { Accept: "text/html" } });
    if (!response.ok) throw new Error("refresh: HTTP " + response.status);
    live.innerHTML = await response.text();
  }

  function poll(signature, onChange, isRunning) {
    let last = null;
    let stopped = false;
    async function tick() {
      if (stopped) return;
      try {
        const sig = await signature();
        if (last !== null && sig !== last) await onChange();
        last = sig;
        if (!isRunning()) {
          stopped = true;
          return;
        }
      } catch (e) {
        // a missed poll (server restarting, network) is retried on the next tick
      }
      setTimeout(tick, POLL_MS);
    }
    setTimeout(tick, POLL_MS);
  }

  function sweepSignature(s) {
    // a worker going silent (or a stall) refreshes the page as a state change does
    const workers = (s.workers || []).map((w) => w.name + ":" + w.pid + ":" + w.state);
    return [s.id, s.status, s.round, s.search_finished, JSON.stringify(s.counts), s.stall || "",
      workers.join(",")].join("|");
  }

  function pollList() {
    initToken();
    const live = document.getElementById("live");
    if (!live || live.dataset.running !== "true") return;
    let running = true;
    poll(
      async () => {
        const sweeps = await getJSON("/api/sweeps");
        running = sweeps.some((s) => s.status === "queued" || s.status === "running");
        return sweeps.map(sweepSignature).join(";");
      },
      () => refreshFragment(live),
      () => running
    );
  }

  // -- charts ---------------------------------------------------------------------------------
  const PLOT_CONFIG = { displaylogo: false, responsive: true };

  function chartData() {
    const el = document.getElementById("chart-data");
    return el ? JSON.parse(el.textContent) : null;
  }

  function better(higher) {
    return higher ? (a, b) => a > b : (a, b) => a < b;
  }

  function option(select, value, label, selected) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    if (selected) o.selected = true;
    select.appendChild(o);
  }

  function labelled(text, select) {
    const label = document.createElement("label");
    label.textContent = text + " ";
    label.appendChild(select);
    return label;
  }

  const heat = { x: null, y: null, metric: null, fixed: {} };

  function varyingParams(rows) {
    const values = {};
    for (const r of rows) {
      for (const [k, v] of Object.entries(r.params || {})) {
        if (typeof v !== "number") continue;
        (values[k] = values[k] || new Set()).add(v);
      }
    }
    const names = Object.keys(values).filter((k) => values[k].size > 1);
    const sorted = {};
    for (const k of names) sorted[k] = Array.from(values[k]).sort((a, b) => a - b);
    return sorted;
  }

  // a paragraph holding ``text`` as text (never parsed as markup)
  function emptyNote(text) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    return p;
  }

  // Plotly draws a trace's text with a few HTML-like tags: user text goes in as entities
  function plotlyText(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function drawHeatmap(data) {
    const box = document.getElementById("heatmap");
    const controls = document.getElementById("heat-controls");
    if (!box || !controls || typeof Plotly === "undefined") return;
    const params = varyingParams(data.rows);
    const names = Object.keys(params);
    if (names.length < 2) {
      controls.innerHTML = "";
      box.replaceChildren(
        emptyNote(
          "A heatmap needs two space parameters that vary (this space has " +
            (names.length ? names.join(", ") : "none") +
            ")."
        )
      );
      return;
    }
    if (!names.includes(heat.x)) heat.x = names[0];
    if (!names.includes(heat.y) || heat.y === heat.x) heat.y = names.find((n) => n !== heat.x);
    if (!data.metrics.includes(heat.metric)) heat.metric = data.metric;

    controls.innerHTML = "";
    const make = (id, items, current, onChange) => {
      const select = document.createElement("select");
      select.id = id;
      for (const [value, label] of items) option(select, value, label, String(value) === String(current));
      select.addEventListener("change", () => {
        onChange(select.value);
        drawHeatmap(chartData());
      });
      return select;
    };
    const pairs = names.map((n) => [n, n]);
    controls.appendChild(labelled("x", make("heat-x", pairs, heat.x, (v) => (heat.x = v))));
    controls.appendChild(labelled("y", make("heat-y", pairs, heat.y, (v) => (heat.y = v))));
    controls.appendChild(
      labelled(
        "metric",
        make("heat-metric", data.metrics.map((m) => [m, m]), heat.metric, (v) => (heat.metric = v))
      )
    );
    const others = names.filter((n) => n !== heat.x && n !== heat.y);
    for (const n of others) {
      const current = heat.fixed[n] === undefined ? "best" : heat.fixed[n];
      const items = [["best", "best of all"]].concat(params[n].map((v) => [v, String(v)]));
      controls.appendChild(
        labelled(n, make("heat-" + n, items, current, (v) => (heat.fixed[n] = v)))
      );
    }

    const higher = !!data.higher[heat.metric];
    const isBetter = better(higher);
    const xs = params[heat.x];
    const ys = params[heat.y];
    const z = ys.map(() => xs.map(() => null));
    const ids = ys.map(() => xs.map(() => null));
    for (const r of data.rows) {
      const value = (r.scores || {})[heat.metric];
      if (typeof value !== "number") continue;
      const keep = others.every((n) => {
        const want = heat.fixed[n];
        return want === undefined || want === "best" || String(r.params[n]) === String(want);
      });
      if (!keep) continue;
      const i = ys.indexOf(r.params[heat.y]);
      const j = xs.indexOf(r.params[heat.x]);
      if (i < 0 || j < 0) continue;
      if (z[i][j] === null || isBetter(value, z[i][j])) {
        z[i][j] = value;
        ids[i][j] = r.id;
      }
    }
    const trace = {
      type: "heatmap",
      x: xs.map(String),
      y: ys.map(String),
      z,
      customdata: ids,
      colorscale: "Viridis",
      reversescale: !higher, // the better end is always yellow
      texttemplate: "%{z:.3f}",
      hovertemplate:
        heat.x + "=%{x}<br>" + heat.y + "=%{y}<br>" + heat.metric + "=%{z}<br>candidate %{customdata}<extra></extra>",
      colorbar: { title: { text: heat.metric } },
    };
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 50 },
      height: 340,
      xaxis: { title: { text: heat.x }, type: "category" },
      yaxis: { title: { text: heat.y }, type: "category" },
    };
    Plotly.react(box, [trace], layout, PLOT_CONFIG);
    if (!box.dataset.clickBound) {
      box.dataset.clickBound = "1";
      box.on("plotly_click", (event) => {
        const id = event.points && event.points[0] && event.points[0].customdata;
        if (id) window.location.href = "/candidates/" + id;
      });
    }
  }

  const LEVEL_COLORS = ["#9b59b6", "#e67e22", "#16a085", "#2457c5", "#c0392b", "#7f8c8d"];

  function bestLine(points, isBetter) {
    let best = null;
    return points.map((p) => {
      if (best === null || isBetter(p.value, best)) best = p.value;
      return best;
    });
  }

  // the base model's score as a dashed line across the sorted times ``at``; null without one
  function referenceLine(data, metric, name, at) {
    const ref = data.reference && data.reference[metric];
    if (typeof ref !== "number") return null;
    return {
      type: "scatter",
      mode: "lines",
      name: name,
      x: [at[0], at[at.length - 1]],
      y: [ref, ref],
      line: { dash: "dash", color: "#c0392b" },
    };
  }

  function drawLevels(box, data) {
    // halving: one best-so-far line per fidelity level (each scores the plans that reached it)
    const levels = data.levels.filter((lv) => lv.points.length);
    if (!levels.length) {
      box.innerHTML = '<p class="empty">No scored candidates yet.</p>';
      return;
    }
    if (box.querySelector("p.empty")) box.innerHTML = "";
    const traces = [];
    data.levels.forEach((lv, i) => {
      if (!lv.points.length) return;
      const color = i === data.levels.length - 1 ? "#2457c5" : LEVEL_COLORS[i % LEVEL_COLORS.length];
      const times = lv.points.map((p) => p.at);
      traces.push({
        type: "scatter",
        mode: "markers",
        name: lv.label,
        legendgroup: "level" + i,
        showlegend: false,
        x: times,
        y: lv.points.map((p) => p.value),
        text: lv.points.map((p) => p.plan),
        marker: { color, size: 5, opacity: 0.45 },
        hovertemplate: "%{text}<br>" + lv.label + ": " + lv.metric + "=%{y}<extra></extra>",
      });
      traces.push({
        type: "scatter",
        mode: "lines+markers",
        name: "best so far: " + lv.label,
        legendgroup: "level" + i,
        x: times,
        y: bestLine(lv.points, better(lv.higher_is_better)),
        line: { shape: "hv", color, width: i === data.levels.length - 1 ? 3 : 2 },
        marker: { size: 4 },
      });
    });
    const all = levels.flatMap((lv) => lv.points.map((p) => p.at)).sort();
    const refLine = referenceLine(data, data.metric, "base model (full)", all);
    if (refLine) traces.push(refLine);
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 50 },
      height: 340,
      xaxis: { title: { text: "scored at" } },
      yaxis: { title: { text: data.metric + " per fidelity level" } },
      legend: { orientation: "h", y: -0.25 },
    };
    Plotly.react(box, traces, layout, PLOT_CONFIG);
  }

  function drawBestSoFar(data) {
    const box = document.getElementById("best-so-far");
    if (!box || typeof Plotly === "undefined") return;
    if (data.levels && data.levels.length > 1) {
      drawLevels(box, data);
      return;
    }
    const metric = data.metric;
    const isBetter = better(data.higher_is_better);
    const done = data.rows
      .filter((r) => r.finished_at && typeof (r.scores || {})[metric] === "number")
      .sort((a, b) => a.finished_at.localeCompare(b.finished_at));
    if (!done.length) {
      box.innerHTML = '<p class="empty">No scored candidates yet.</p>';
      return;
    }
    if (box.querySelector("p.empty")) box.innerHTML = "";
    let best = null;
    const bestY = [];
    for (const r of done) {
      const v = r.scores[metric];
      if (best === null || isBetter(v, best)) best = v;
      bestY.push(best);
    }
    const times = done.map((r) => r.finished_at);
    const traces = [
      {
        type: "scatter",
        mode: "markers",
        name: "candidate",
        x: times,
        y: done.map((r) => r.scores[metric]),
        text: done.map((r) => plotlyText(r.plan)),
        marker: { color: "#9aa5b1", size: 7 },
        hovertemplate: "%{text}<br>" + metric + "=%{y}<extra></extra>",
      },
      {
        type: "scatter",
        mode: "lines+markers",
        name: "best so far",
        x: times,
        y: bestY,
        line: { shape: "hv", color: "#2457c5", width: 3 },
      },
    ];
    const refLine = referenceLine(data, metric, "base model", times);
    if (refLine) traces.push(refLine);
    const layout = {
      margin: { l: 60, r: 20, t: 10, b: 50 },
      height: 340,
      xaxis: { title: { text: "finished at" } },
      yaxis: { title: { text: metric + (data.higher_is_better ? " (higher is better)" : " (lower is better)") } },
      legend: { orientation: "h", y: -0.25 },
    };
    Plotly.react(box, traces, layout, PLOT_CONFIG);
  }

  function drawCharts() {
    const data = chartData();
    if (!data) return;
    drawHeatmap(data);
    drawBestSoFar(data);
  }

  // -- the sweep page ---------------------------------------------------------------------------
  function showError(id, text) {
    const el = document.getElementById(id);
    if (!el) return;
    el.textContent = text;
    el.hidden = !text;
  }

  function detailText(body, fallback) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
    return fallback;
  }

  function initCancel(live) {
    const button = document.getElementById("cancel");
    if (!button) return;
    let armed = null;
    button.addEventListener("click", async () => {
      if (!armed) {
        button.textContent = "Click again to cancel";
        armed = setTimeout(() => {
          armed = null;
          button.textContent = "Cancel sweep";
        }, 5000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.disabled = true;
      try {
        const response = await write("POST", "/api/sweeps/" + button.dataset.sweep + "/cancel");
        const body = await response.json().catch(() => null);
        if (!response.ok) {
          showError("action-error", detailText(body, "cancel failed: HTTP " + response.status));
        } else {
          showError("action-error", "");
          await refreshFragment(live);
          afterRefresh(live);
        }
      } catch (e) {
        showError("action-error", "cancel failed: " + e.message);
      } finally {
        button.disabled = false;
        button.textContent = "Cancel sweep";
      }
    });
  }

  function liveStatus(live) {
    const line = live.querySelector(".status-line");
    return line ? line.dataset.status : "";
  }

  function afterRefresh(live) {
    initSort(document.getElementById("leaderboard"));
    drawCharts();
    const running = ["queued", "running"].includes(liveStatus(live));
    live.dataset.running = running ? "true" : "false";
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.hidden = !running;
  }

  function sweepPage() {
    initToken();
    const live = document.getElementById("live");
    initSort(document.getElementById("leaderboard"));
    drawCharts();
    initCancel(live);
    if (live.dataset.running !== "true") return;
    poll(
      async () => sweepSignature(await getJSON("/api/sweeps/" + live.dataset.sweep)),
      async () => {
        await refreshFragment(live);
        afterRefresh(live);
      },
      () => live.dataset.running === "true"
    );
  }

  // -- the new-sweep form ------------------------------------------------------------------------
  function intOrRange(text) {
    const parts = String(text)
      .split(/[\s,:]+/)
      .filter((p) => p !== "")
      .map(Number);
    if (parts.length === 1) return parts[0];
    return parts;
  }

  function value(id) {
    const el = document.getElementById(id);
    return el ? el.value.trim() : "";
  }

  function buildBody() {
    const kind = value("space-kind");
    const space = { kind };
    if (kind === "overlap") {
      space.slice_size = intOrRange(value("slice_size"));
      space.jump = intOrRange(value("jump"));
      space.last_slice = intOrRange(value("last_slice"));
      if (value("first_slice")) space.first_slice = intOrRange(value("first_slice"));
    } else if (kind === "explicit") {
      space.plans = value("plans")
        .split("\n")
        .map((p) => p.trim())
        .filter((p) => p);
    }
    const filters = {};
    for (const f of ["max_repeats", "min_last_slice", "min_jump"]) {
      if (value(f) !== "") filters[f] = Number(value(f));
    }
    if (Object.keys(filters).length) space.filters = filters;
    const evals = [];
    const kinds = [];
    if (document.getElementById("ppl-on").checked) {
      evals.push({
        kind: "perplexity",
        corpus: value("ppl-corpus"),
        tokens: Number(value("ppl-tokens")),
        ctx: Number(value("ppl-ctx")),
      });
      kinds.push("perplexity");
    }
    if (document.getElementById("eq-on").checked) {
      const spec = { kind: "eq_bench", questions: value("eq-questions") };
      if (value("eq-limit") !== "") spec.limit = Number(value("eq-limit"));
      evals.push(spec);
      kinds.push("eq_bench");
    }
    if (document.getElementById("pref-on").checked) {
      evals.push({ kind: "preference", prompts: value("pref-prompts") });
      kinds.push("preference");
    }
    const strategy = buildStrategy();
    const body = { name: value("name"), model: value("model"), space, evals, strategy };
    const load = buildLoad();
    if (load) body.load = load;
    return { body, kinds };
  }

  // -- load options: only what is chosen is sent (the rest: the server's defaults) -------------
  function buildLoad() {
    const load = {};
    const pairs = [
      ["quantization", "load-quantization"],
      ["dtype", "load-dtype"],
      ["device_map", "load-device-map"],
    ];
    for (const [field, id] of pairs) {
      if (value(id) !== "") load[field] = value(id);
    }
    const caps = value("load-max-memory");
    if (caps !== "") {
      // "0=70GiB,cpu=100GiB" -> {"0": "70GiB", "cpu": "100GiB"}; a malformed item is sent as
      // is under its own name, so the API's 422 names it
      load.max_memory = {};
      for (const item of caps.split(",")) {
        const [device, ...size] = item.split("=");
        load.max_memory[device.trim()] = size.join("=").trim();
      }
    }
    return Object.keys(load).length ? load : null;
  }

  // -- the strategy part of the form: which fields each kind has, and their defaults -----------
  const STRATEGY_FIELDS = {
    grid: [],
    random: ["budget", "seed"],
    halving: ["eta", "rungs", "budget", "seed"],
    tpe: ["budget", "batch", "startup", "seed"],
    cmaes: ["budget", "batch", "startup", "seed"],
  };
  const DEFAULT_BUDGET = { random: "20", tpe: "20", cmaes: "20", halving: "" }; // halving: all

  function buildStrategy() {
    const kind = value("strategy-kind") || "grid";
    const strategy = { kind };
    for (const name of STRATEGY_FIELDS[kind] || []) {
      const text = value("strategy-" + name);
      if (text !== "") strategy[name] = Number(text); // blank: the API's default (or its 422)
    }
    return strategy;
  }

  function showStrategyKind() {
    const kind = value("strategy-kind") || "grid";
    for (const el of document.querySelectorAll(".strategy-help")) el.hidden = el.dataset.kind !== kind;
    for (const el of document.querySelectorAll(".budget-help")) {
      el.hidden = !el.dataset.kind.split(" ").includes(kind);
    }
    for (const el of document.querySelectorAll(".strategy-field")) {
      el.hidden = !el.dataset.kinds.split(" ").includes(kind);
    }
    const budget = document.getElementById("strategy-budget");
    if (budget && !budget.dataset.edited && kind in DEFAULT_BUDGET) {
      budget.value = DEFAULT_BUDGET[kind];
      budget.placeholder = kind === "halving" ? "all" : "";
    }
  }

  function initStrategy() {
    const select = document.getElementById("strategy-kind");
    if (!select) return;
    const budget = document.getElementById("strategy-budget");
    if (budget) budget.addEventListener("input", () => (budget.dataset.edited = "1"));
    select.addEventListener("change", showStrategyKind);
    showStrategyKind();
  }

  const UNION_TAGS = [
    "overlap", "rys", "explicit", "perplexity", "eq_bench", "preference", "int", "list[int]",
    "grid", "random", "halving", "tpe", "cmaes",
  ];

  function isUnionTag(part) {
    // pydantic's names of union members: "tagged-union[GridSpec,...]", "literal['grid','halving']"
    return UNION_TAGS.includes(part) || /^(tagged-union|literal|function-[a-z]+)\[/.test(part);
  }

  function relevantErrors(details, body) {
    // a strategy object fails both union members; the bare-name member's complaint
    // ("Input should be 'grid' or 'halving'") says nothing about the object: leave it out
    const isLiteral = (d) =>
      Array.isArray(d.loc) && d.loc[1] === "strategy" && d.loc.some((p) => /^literal\[/.test(String(p)));
    if (typeof body.strategy !== "object") return details;
    const others = details.filter((d) => !isLiteral(d));
    return others.length ? others : details;
  }

  function fieldFor(loc, kinds) {
    // loc like ["body", "space", "overlap", "slice_size", 1] -> the closest data-loc element
    let parts = loc.filter((p) => p !== "body" && !isUnionTag(String(p))).map(String);
    if (parts[0] === "evals" && parts.length > 1 && /^\d+$/.test(parts[1])) {
      const kind = kinds[Number(parts[1])];
      if (kind) parts = ["eval-" + kind];
    }
    for (let n = parts.length; n > 0; n--) {
      const el = document.querySelector('.field-error[data-loc="' + parts.slice(0, n).join(".") + '"]');
      if (el) return el;
    }
    return null;
  }

  function clearErrors() {
    for (const el of document.querySelectorAll(".field-error")) {
      el.textContent = "";
      el.classList.remove("shown");
    }
    const summary = document.getElementById("form-errors");
    summary.innerHTML = "";
    summary.hidden = true;
  }

  function showErrors(details, kinds) {
    const summary = document.getElementById("form-errors");
    const list = document.createElement("ul");
    for (const d of details) {
      const loc = Array.isArray(d.loc) ? d.loc : [];
      const shownLoc = loc.filter((p) => p !== "body" && !/^(tagged-union|literal)\[/.test(String(p)));
      const text = (shownLoc.length ? shownLoc.join(".") + ": " : "") + d.msg;
      const li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
      const field = fieldFor(loc, kinds);
      if (field) {
        field.textContent = field.textContent ? field.textContent + "; " + d.msg : d.msg;
        field.classList.add("shown");
      }
    }
    summary.appendChild(list);
    summary.hidden = false;
  }

  function newPage() {
    initToken();
    const form = document.getElementById("new-sweep");
    const kind = document.getElementById("space-kind");
    const showKind = () => {
      for (const part of document.querySelectorAll(".space-part")) part.hidden = part.dataset.kind !== kind.value;
    };
    kind.addEventListener("change", showKind);
    showKind();
    initStrategy();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      const state = document.getElementById("submit-state");
      const button = document.getElementById("submit");
      const { body, kinds } = buildBody();
      button.disabled = true;
      state.textContent = "submitting…";
      try {
        const response = await write("POST", "/api/sweeps", body);
        const data = await response.json().catch(() => null);
        if (response.status === 201) {
          state.textContent = "created sweep " + data.id + " with " + data.candidates + " candidates";
          window.location.href = "/sweeps/" + data.id;
          return;
        }
        if (response.status === 422 && data && Array.isArray(data.detail)) {
          showErrors(relevantErrors(data.detail, body), kinds);
        } else {
          showErrors([{ loc: [], msg: detailText(data, "HTTP " + response.status) }], kinds);
        }
        state.textContent = "";
      } catch (e) {
        showErrors([{ loc: [], msg: "could not reach the API: " + e.message }], kinds);
        state.textContent = "";
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", initToken);

  return { pollList, sweepPage, newPage, sortTable, token };
})();
