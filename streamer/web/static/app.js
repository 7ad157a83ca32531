// streamer dashboard: state pushed as server-sent events, drawn on canvas.
// Plain script, no library, no network access beyond this server.
"use strict";
(function () {
  const QUADRANTS = [
    ["excited/happy", 0.55, -0.55],
    ["tense/angry", -0.55, -0.55],
    ["sad/bored", -0.55, 0.55],
    ["calm/content", 0.55, 0.55],
  ];
  const camerasBody = document.querySelector("#cameras tbody");
  const tracksEl = document.getElementById("tracks");
  const previewsEl = document.getElementById("previews");
  const connEl = document.getElementById("conn");
  const modelEl = document.getElementById("model");
  const noteEl = document.getElementById("model-note");
  let hull = null; // the polygon the model's VA never leaves, or null
  let source = null;
  let updates = 0;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(x, nd) {
    return (x >= 0 ? "+" : "") + x.toFixed(nd);
  }

  function renderCameras(cameras) {
    const seen = new Set();
    for (const cam of cameras) {
      seen.add(cam.name);
      let row = camerasBody.querySelector(`tr[data-camera="${CSS.escape(cam.name)}"]`);
      if (!row) {
        row = el("tr");
        row.dataset.camera = cam.name;
        for (let i = 0; i < 7; i++) row.appendChild(el("td", i > 1 ? "num" : ""));
        camerasBody.appendChild(row);
      }
      const c = row.children;
      c[0].textContent = cam.name;
      c[1].textContent = cam.state + (cam.detail ? ` (${cam.detail})` : "");
      c[1].className = `state state-${cam.state}`;
      c[2].textContent = cam.decoded_fps.toFixed(1);
      c[3].textContent = cam.analysed_fps.toFixed(1);
      c[4].textContent = cam.skipped;
      c[5].textContent = cam.reconnects;
      c[6].textContent = cam.faces;
      row.dataset.state = cam.state;
    }
    for (const row of [...camerasBody.children]) {
      if (!seen.has(row.dataset.camera)) row.remove();
    }
  }

  function drawPlane(canvas, tr) {
    const g = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, r = w / 2 - 14;
    const cx = w / 2, cy = h / 2;
    const px = (v) => cx + v * r, py = (a) => cy - a * r;
    g.clearRect(0, 0, w, h);
    g.strokeStyle = "#3a4350";
    g.lineWidth = 1;
    g.beginPath(); g.arc(cx, cy, r, 0, 2 * Math.PI); g.stroke();
    g.beginPath(); g.moveTo(cx - r, cy); g.lineTo(cx + r, cy); g.moveTo(cx, cy - r); g.lineTo(cx, cy + r); g.stroke();
    g.fillStyle = "#6b7482";
    g.font = "9px system-ui, sans-serif";
    g.textAlign = "center";
    for (const [name, x, y] of QUADRANTS) g.fillText(name, cx + x * r, cy + y * r);
    g.fillText("valence", cx + r - 14, cy - 4);
    g.fillText("arousal", cx + 20, cy - r + 8);
    if (hull) {
      // Where this model's values can be at all: nothing outside, no intensity inside.
      g.strokeStyle = "#8a93a3";
      g.setLineDash([3, 3]);
      g.beginPath();
      hull.forEach(([v, a], i) => (i === 0 ? g.moveTo(px(v), py(a)) : g.lineTo(px(v), py(a))));
      g.closePath();
      g.stroke();
      g.setLineDash([]);
    }
    const trail = tr.trail;
    for (let i = 1; i < trail.length; i++) {
      g.strokeStyle = tr.colour;
      g.globalAlpha = 0.15 + 0.7 * (i / trail.length);
      g.beginPath();
      g.moveTo(px(trail[i - 1][1]), py(trail[i - 1][2]));
      g.lineTo(px(trail[i][1]), py(trail[i][2]));
      g.stroke();
    }
    g.globalAlpha = 1;
    g.fillStyle = tr.colour;
    g.beginPath(); g.arc(px(tr.valence), py(tr.arousal), 5, 0, 2 * Math.PI); g.fill();
    g.strokeStyle = "#fff";
    g.stroke();
  }

  function drawSpark(canvas, trail, k, colour) {
    const g = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    g.clearRect(0, 0, w, h);
    g.strokeStyle = "#3a4350";
    g.beginPath(); g.moveTo(0, h / 2); g.lineTo(w, h / 2); g.stroke();
    if (trail.length < 2) return;
    const t0 = trail[0][0], span = Math.max(trail[trail.length - 1][0] - t0, 1e-3);
    g.strokeStyle = colour;
    g.lineWidth = 1.5;
    g.beginPath();
    trail.forEach((p, i) => {
      const x = ((p[0] - t0) / span) * (w - 2) + 1, y = h / 2 - p[k] * (h / 2 - 2);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }

  function trackCard(key, tr) {
    const card = el("div", "track");
    card.dataset.track = key;
    card.style.borderLeftColor = tr.colour;
    card.appendChild(el("h3"));
    const body = el("div", "body");
    const plane = el("canvas", "plane");
    plane.width = 180; plane.height = 180;
    body.appendChild(plane);
    const sparks = el("div", "sparks");
    for (const name of ["valence", "arousal"]) {
      const label = el("span", `label-${name}`);
      const c = el("canvas", `spark spark-${name}`);
      c.width = 200; c.height = 48;
      sparks.appendChild(label);
      sparks.appendChild(c);
    }
    body.appendChild(sparks);
    card.appendChild(body);
    const desc = el("div", "desc");
    desc.appendChild(el("span", "src"));
    desc.appendChild(el("span", "text"));
    card.appendChild(desc);
    return card;
  }

  function renderTracks(tracks) {
    const seen = new Set();
    const empty = tracksEl.querySelector(".empty");
    if (empty) empty.hidden = tracks.length > 0;
    for (const tr of tracks) {
      const key = `${tr.camera}/${tr.track_id}`;
      seen.add(key);
      let card = tracksEl.querySelector(`.track[data-track="${CSS.escape(key)}"]`);
      if (!card) {
        card = trackCard(key, tr);
        tracksEl.appendChild(card);
      }
      card.querySelector("h3").textContent = `${tr.camera} · track ${tr.track_id} · ${tr.t.toFixed(1)} s`;
      card.dataset.valence = tr.valence;
      card.dataset.arousal = tr.arousal;
      drawPlane(card.querySelector(".plane"), tr);
      card.querySelector(".label-valence").textContent = `valence ${fmt(tr.valence, 2)}`;
      card.querySelector(".label-arousal").textContent = `arousal ${fmt(tr.arousal, 2)}`;
      drawSpark(card.querySelector(".spark-valence"), tr.trail, 1, tr.colour);
      drawSpark(card.querySelector(".spark-arousal"), tr.trail, 2, tr.colour);
      const src = card.querySelector(".src"), text = card.querySelector(".desc .text");
      if (tr.description) {
        src.textContent = tr.description.source === "llm" ? `LLM ${tr.description.model}` : "fallback";
        src.className = `src ${tr.description.source}`;
        text.textContent = tr.description.text || [tr.description.basic, ...tr.description.complex].join(", ");
      } else {
        src.textContent = "";
        text.textContent = "";
      }
    }
    for (const card of [...tracksEl.querySelectorAll(".track")]) {
      if (!seen.has(card.dataset.track)) card.remove();
    }
  }

  function renderPreviews(state) {
    previewsEl.hidden = !state.preview;
    if (!state.preview) return;
    for (const cam of state.cameras) {
      let fig = previewsEl.querySelector(`figure[data-camera="${CSS.escape(cam.name)}"]`);
      if (!fig) {
        fig = el("figure");
        fig.dataset.camera = cam.name;
        fig.appendChild(el("img"));
        fig.appendChild(el("figcaption", "", cam.name));
        previewsEl.appendChild(fig);
      }
      const img = fig.querySelector("img");
      const now = Date.now();
      if (!img.dataset.at || now - Number(img.dataset.at) > 1000) {
        img.dataset.at = String(now);
        img.src = `/api/preview/${encodeURIComponent(cam.name)}.jpg?at=${now}`;
      }
    }
  }

  function apply(state) {
    modelEl.textContent = `model ${state.model}${state.approximate ? " (approximate VA)" : ""}`;
    modelEl.title = state.model_note;
    noteEl.textContent = state.model_note;
    noteEl.hidden = !state.model_note;
    hull = state.model_hull;
    document.body.dataset.hull = hull ? String(hull.length) : "0";
    renderCameras(state.cameras);
    renderTracks(state.tracks);
    renderPreviews(state);
    updates += 1;
    document.body.dataset.updated = String(state.wall_time);
    document.body.dataset.updates = String(updates);
    document.dispatchEvent(new CustomEvent("streamer-state", { detail: state }));
  }

  function connect() {
    source = new EventSource("/events");
    source.addEventListener("state", (e) => {
      connEl.textContent = "live";
      connEl.className = "conn live";
      apply(JSON.parse(e.data));
    });
    source.onerror = () => {
      connEl.textContent = "reconnecting…";
      connEl.className = "conn down";
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (the server answered an error): start over.
        source = null;
        setTimeout(connect, 1000);
      }
    };
  }

  connect();
})();
