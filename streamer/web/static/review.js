// streamer review page: the history of one camera over a chosen range, as Frigate's
// review page shows it: a timeline (episodes as bars, the room mood as a band, outages
// and unrecorded spans shaded), the episodes newest first (unreviewed marked; mark
// reviewed one by one or all shown; keep one from retention), an episode's VA trace.
"use strict";
(function () {
  const QCOL = { excited: "#e3b341", calm: "#3fb950", tense: "#f85149", sad: "#58a6ff", neutral: "#8a93a3", none: "#2b2f36" };
  const $ = (id) => document.getElementById(id);
  const cameraSel = $("camera"), tbody = document.querySelector("#episodes tbody");
  const timeline = $("timeline"), trace = $("trace"), statusEl = $("status");
  const state = { after: 0, before: 0, episodes: [], mood: [], tl: null, next: null, selected: null };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const local = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
  function human(s) {
    if (s == null) return "-";
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(Math.round(s - m * 60)).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }
  function toInput(t) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }
  async function get(path, params) {
    const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ""));
    const r = await fetch(`${path}?${q}`, { credentials: "same-origin" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  async function post(path, body) {
    const r = await fetch(path, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const out = await r.json();
    if (!r.ok) throw new Error(out.error || r.statusText);
    return out;
  }
  function say(text) { statusEl.textContent = text; }

  function setRange(seconds) {
    state.before = Date.now() / 1000;
    state.after = state.before - seconds;
    $("from").value = toInput(state.after);
    $("to").value = toInput(state.before);
  }

  async function load() {
    const camera = cameraSel.value;
    if (!camera) { say("no camera in the history yet"); return; }
    say("loading…");
    try {
      const [eps, mood, tl] = await Promise.all([
        get("/api/episodes", { camera, after: state.after, before: state.before, reviewed: $("unreviewed").checked ? "false" : "", limit: 200 }),
        get("/api/mood", { camera, after: state.after, before: state.before, points: 600 }),
        get("/api/timeline", { camera, after: state.after, before: state.before }),
      ]);
      state.episodes = eps.episodes; state.next = eps.next_before; state.mood = mood.mood; state.tl = tl;
      render();
      say(`${state.episodes.length} episode(s) from ${local(state.after)} to ${local(state.before)}`);
    } catch (e) { say(`error: ${e.message}`); }
  }

  async function more() {
    const eps = await get("/api/episodes", { camera: cameraSel.value, after: state.after, before: state.next, reviewed: $("unreviewed").checked ? "false" : "", limit: 200 });
    state.episodes = state.episodes.concat(eps.episodes); state.next = eps.next_before;
    render();
  }

  function xOf(t) { return ((t - state.after) / (state.before - state.after)) * timeline.width; }

  function drawTimeline() {
    const g = timeline.getContext("2d"), w = timeline.width, h = timeline.height;
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#2b2f36"; g.fillRect(0, 0, w, h);  // not recorded unless a run covers it
    g.fillStyle = "#1b2027";
    for (const r of (state.tl ? state.tl.recording : [])) g.fillRect(xOf(r.start), 0, Math.max(1, xOf(r.end) - xOf(r.start)), h);
    g.fillStyle = "rgba(160, 40, 40, 0.55)";
    for (const o of (state.tl ? state.tl.outages : [])) g.fillRect(xOf(o.start), 0, Math.max(1, xOf(o.end) - xOf(o.start)), h);
    for (const m of state.mood) {  // the mood band
      g.fillStyle = QCOL[m.quadrant] || QCOL.none;
      g.globalAlpha = m.count ? 0.85 : 0.25;
      g.fillRect(xOf(m.start), 8, Math.max(1, xOf(m.end) - xOf(m.start)), 16);
    }
    g.globalAlpha = 1;
    const rules = [...new Set(state.episodes.map((e) => e.rule))].sort();
    const lane = (h - 40) / Math.max(1, rules.length);
    state.bars = [];
    for (const ep of state.episodes) {
      const y = 34 + rules.indexOf(ep.rule) * lane;
      const x0 = xOf(ep.wall_start), x1 = xOf(ep.wall_end || (ep.wall_start + ep.duration_s));
      g.fillStyle = ep.reviewed_at ? "#4d5563" : "#f0883e";
      if (state.selected === ep.id) g.fillStyle = "#b9d4ff";
      const bw = Math.max(3, x1 - x0);
      g.fillRect(x0, y, bw, Math.max(4, lane - 4));
      state.bars.push([x0, y, bw, Math.max(4, lane - 4), ep]);
    }
    g.fillStyle = "#8a93a3"; g.font = "10px system-ui, sans-serif";
    rules.forEach((r, i) => g.fillText(r, 4, 34 + i * lane + 10));
    g.fillText(local(state.after), 4, h - 4);
    const right = local(state.before); g.fillText(right, w - g.measureText(right).width - 4, h - 4);
  }

  function row(ep) {
    const tr = el("tr", ep.reviewed_at ? "" : "unreviewed");
    tr.dataset.id = String(ep.id);
    if (state.selected === ep.id) tr.classList.add("selected");
    const stateText = ep.open ? "open" : ep.interrupted ? "interrupted" : ep.reason;
    for (const text of [local(ep.wall_start), ep.camera, String(ep.track_id), ep.rule, human(ep.duration_s), stateText + (ep.keep ? " · kept" : "")]) tr.appendChild(el("td", "", text));
    tr.appendChild(el("td", "desc", ep.description ? ep.description.text : ""));
    const td = el("td");
    const rev = el("button", "reviewed", ep.reviewed_at ? "unreview" : "reviewed");
    rev.addEventListener("click", async (e) => { e.stopPropagation(); await mark([ep.id], !ep.reviewed_at); });
    const keep = el("button", "keep", ep.keep ? "unkeep" : "keep");
    keep.addEventListener("click", async (e) => { e.stopPropagation(); await post(`/api/episodes/${ep.id}/keep`, { keep: !ep.keep }); ep.keep = !ep.keep; render(); });
    td.appendChild(rev); td.appendChild(keep); tr.appendChild(td);
    tr.addEventListener("click", () => select(ep));
    return tr;
  }

  function render() {
    drawTimeline();
    tbody.replaceChildren(...state.episodes.map(row));
    $("count").textContent = `Episodes (${state.episodes.filter((e) => !e.reviewed_at).length} unreviewed of ${state.episodes.length})`;
    $("more").hidden = !state.next;
    document.body.dataset.episodes = String(state.episodes.length);
  }

  async function mark(ids, reviewed) {
    try {
      await post("/api/episodes/reviewed", { ids, reviewed });
      const now = Date.now() / 1000;
      for (const ep of state.episodes) if (ids.includes(ep.id)) ep.reviewed_at = reviewed ? now : null;
      render();
    } catch (e) { say(`error: ${e.message}`); }
  }

  async function select(ep) {
    state.selected = ep.id;
    render();
    $("detail").hidden = false;
    $("detail-title").textContent = `${ep.rule} · ${ep.camera} · track ${ep.track_id}`;
    $("detail-times").textContent = `from ${local(ep.wall_start)} to ${ep.wall_end ? local(ep.wall_end) : "(open)"} · ${human(ep.duration_s)} · ${ep.open ? "open" : ep.interrupted ? "interrupted" : ep.reason}`;
    $("detail-desc").textContent = ep.description ? `${ep.description.source === "llm" ? "LLM" : "fallback"}: ${ep.description.text}` : "no description";
    const pad = 10, end = ep.wall_end || ep.wall_start + ep.duration_s;
    const va = await get("/api/va", { camera: ep.camera, track: ep.track_id, run: ep.run, after: ep.wall_start - pad, before: end + pad });
    drawTrace(va.bins, ep.wall_start - pad, end + pad, ep);
  }

  function drawTrace(bins, t0, t1, ep) {
    const g = trace.getContext("2d"), w = trace.width, h = trace.height;
    const x = (t) => ((t - t0) / (t1 - t0)) * (w - 50) + 40, y = (v) => h / 2 - v * (h / 2 - 14);
    g.clearRect(0, 0, w, h);
    g.fillStyle = "rgba(240,136,62,0.15)"; g.fillRect(x(ep.wall_start), 0, x(ep.wall_end || t1) - x(ep.wall_start), h);
    g.strokeStyle = "#3a4350"; g.beginPath(); g.moveTo(40, y(0)); g.lineTo(w, y(0)); g.stroke();
    g.fillStyle = "#8a93a3"; g.font = "10px system-ui, sans-serif";
    g.fillText("+1", 4, y(1) + 4); g.fillText("0", 4, y(0) + 4); g.fillText("-1", 4, y(-1) + 4);
    for (const [k, col] of [["valence", "#e3b341"], ["arousal", "#58a6ff"]]) {
      g.fillStyle = col; g.globalAlpha = 0.2;
      for (const b of bins) g.fillRect(x(b.wall_time), y(b[k].max), Math.max(1, x(b.wall_time + 1) - x(b.wall_time)), y(b[k].min) - y(b[k].max));
      g.globalAlpha = 1; g.strokeStyle = col; g.lineWidth = 1.5; g.beginPath();
      bins.forEach((b, i) => { const px = x(b.wall_time + 0.5), py = y(b[k].mean); if (i) g.lineTo(px, py); else g.moveTo(px, py); });
      g.stroke();
    }
    g.fillStyle = "#e3b341"; g.fillText("valence", w - 110, 12); g.fillStyle = "#58a6ff"; g.fillText("arousal", w - 60, 12);
    g.fillStyle = "#8a93a3";
    g.fillText(new Date(t0 * 1000).toLocaleTimeString(), 40, h - 2);
    const r = new Date(t1 * 1000).toLocaleTimeString(); g.fillText(r, w - g.measureText(r).width - 2, h - 2);
    trace.dataset.bins = String(bins.length);
  }

  timeline.addEventListener("click", (e) => {
    const rect = timeline.getBoundingClientRect();
    const px = (e.clientX - rect.left) * (timeline.width / rect.width), py = (e.clientY - rect.top) * (timeline.height / rect.height);
    for (const [x0, y0, bw, bh, ep] of state.bars || []) if (px >= x0 - 2 && px <= x0 + bw + 2 && py >= y0 && py <= y0 + bh) { select(ep); return; }
  });
  document.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => { setRange(Number(b.dataset.range)); load(); }));
  $("apply").addEventListener("click", () => {
    const a = Date.parse($("from").value) / 1000, b = Date.parse($("to").value) / 1000;
    if (!(b > a)) { say("error: 'to' must be after 'from'"); return; }
    state.after = a; state.before = b; load();
  });
  $("unreviewed").addEventListener("change", load);
  cameraSel.addEventListener("change", load);
  $("more").addEventListener("click", more);
  $("mark-all").addEventListener("click", () => mark(state.episodes.filter((e) => !e.reviewed_at).map((e) => e.id), true));

  (async function start() {
    try {
      const cams = await get("/api/cameras", {});
      cameraSel.replaceChildren(...cams.cameras.map((c) => { const o = el("option", "", c); o.value = c; return o; }));
      setRange(86400);
      await load();
    } catch (e) { say(`error: ${e.message}`); }
  })();
})();
