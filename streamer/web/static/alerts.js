// streamer dashboard: open episodes as alerts, a banner and the page title when one
// starts (a background tab is noticed), each camera's room mood, the ended episodes.
// Reads the state app.js receives (the "streamer-state" event); no network of its own.
"use strict";
(function () {
  const banner = document.getElementById("banner");
  const alertsEl = document.getElementById("alerts");
  const openList = document.getElementById("open-episodes");
  const endedEl = document.getElementById("ended");
  const endedList = document.getElementById("ended-episodes");
  const moodsEl = document.getElementById("moods");
  const moodList = document.getElementById("mood-list");
  const reviewLink = document.getElementById("review-link");
  const baseTitle = document.title;
  const seen = new Set();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function human(s) {
    if (s < 60) return `${Math.round(s)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(Math.round(s - m * 60)).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString();
  }

  function episodeItem(ep, open) {
    const li = el("li", open ? "episode open" : "episode");
    li.dataset.episode = ep.id;
    li.appendChild(el("span", "rule", ep.rule));
    li.appendChild(el("span", "where", `${ep.camera} · track ${ep.track_id}`));
    if (open) {
      li.appendChild(el("span", "for", `for ${human(ep.for_s)}`));
    } else {
      li.appendChild(el("span", "for", `${human(ep.duration_s || 0)} · ${ep.reason || ""}`));
      li.appendChild(el("span", "at", `${clock(ep.wall_start)}–${clock(ep.wall_end || ep.wall_start)}`));
    }
    return li;
  }

  function showBanner(ep) {
    banner.querySelector(".text").textContent =
      `Episode started: ${ep.rule} on ${ep.camera} (track ${ep.track_id}) at ${clock(ep.wall_start)}`;
    banner.dataset.episode = ep.id;
    banner.hidden = false;
  }

  banner.querySelector(".close").addEventListener("click", () => { banner.hidden = true; });

  function render(state) {
    reviewLink.hidden = !state.history;
    const eps = state.episodes || { open: [], ended: [] };
    alertsEl.hidden = eps.open.length === 0;
    openList.replaceChildren(...eps.open.map((ep) => episodeItem(ep, true)));
    for (const ep of eps.open) {
      if (!seen.has(ep.id)) {
        seen.add(ep.id);
        showBanner(ep);
      }
    }
    if (eps.open.length) {
      const names = [...new Set(eps.open.map((e) => `${e.rule} · ${e.camera}`))].join(", ");
      document.title = `(${eps.open.length}) ⚠ ${names} — ${baseTitle}`;
    } else {
      document.title = baseTitle;
    }
    document.body.dataset.openEpisodes = String(eps.open.length);
    endedEl.hidden = eps.ended.length === 0;
    endedList.replaceChildren(...eps.ended.map((ep) => episodeItem(ep, false)));
    const moods = state.mood || [];
    moodsEl.hidden = moods.length === 0;
    moodList.replaceChildren(...moods.map((m) => {
      const d = el("div", `mood q-${m.quadrant}`);
      d.dataset.camera = m.camera;
      d.appendChild(el("strong", "", m.camera));
      d.appendChild(el("span", "quadrant", m.quadrant));
      const va = m.count ? `${m.count} face(s), valence ${m.valence.toFixed(2)}, arousal ${m.arousal.toFixed(2)}` : "no face";
      d.appendChild(el("span", "va", va));
      return d;
    }));
  }

  document.addEventListener("streamer-state", (e) => render(e.detail));
})();
