// triggergate's page: press Deploy, watch the run, know your quota.
// Served from the package (no build step, no CDN); the page works without it.
"use strict";

(function () {
  const FINAL = new Set(["succeeded", "failed", "cancelled", "superseded"]);
  const STORE_KEY = "triggergate.runs";
  const $ = (id) => document.getElementById(id);
  const form = $("trigger");
  const button = $("deploy");
  const message = $("message");
  const quota = $("quota");
  const runsList = $("runs");
  const runsSection = $("runs-section");
  const runStatus = $("run-status");
  if (!form || !button || !message || !quota || !runsList || !runsSection) return;

  const when = new Intl.DateTimeFormat(undefined, {
    weekday: "short", year: "numeric", month: "short", day: "numeric",
    hour: "numeric", minute: "2-digit", timeZoneName: "short",
  });
  const runs = new Map();

  // -- small DOM helpers (text only: nothing from the network becomes markup) --------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children) node.append(child);
    return node;
  }

  function timeEl(date) {
    return el("time", { datetime: date.toISOString(), title: date.toISOString() }, when.format(date));
  }

  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const date = new Date(t.dateTime);
      if (!Number.isNaN(date.getTime())) {
        t.textContent = when.format(date);
        t.title = date.toISOString();
      }
    });
  }

  function say(kind, ...parts) {
    message.className = "message " + kind;
    message.replaceChildren(...parts);
  }

  function safeUrl(url) {
    if (typeof url !== "string" || !url) return null;
    try {
      const parsed = new URL(url, location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = {};
    try { body = await response.json(); } catch (_) { body = {}; }
    return { response, body };
  }

  // -- quota -------------------------------------------------------------------------------

  function showQuota(q) {
    if (q.unlimited) { quota.replaceChildren("No limit applies to you."); return; }
    const limits = quota.dataset.limits || (q.limits || []).join(", ");
    const next = q.next_slot_at ? new Date(q.next_slot_at) : null;
    const remaining = Number(q.remaining || 0);
    if (remaining === 0) {
      quota.replaceChildren(
        `You have used all your triggers (${limits}). You can press again `,
        next ? timeEl(next) : "later", ".");
      return;
    }
    const parts = ["You can press ", el("strong", {}, String(remaining)),
      ` more time${remaining > 1 ? "s" : ""} (limit ${limits}).`];
    if (next) parts.push(" The next one frees up ", timeEl(next), ".");
    quota.replaceChildren(...parts);
  }

  async function refreshQuota() {
    try {
      const { response, body } = await getJson("quota");
      if (response.ok) showQuota(body);
    } catch (_) { /* keep what is shown */ }
  }

  // -- runs --------------------------------------------------------------------------------

  function elapsed(run) {
    const end = run.endedAt || Date.now();
    const s = Math.max(0, Math.round((end - run.startedAt) / 1000));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function save() {
    const list = [...runs.values()].slice(-10).map(({ node, ...rest }) => rest);
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(list)); } catch (_) { /* private mode */ }
  }

  function draw(run) {
    if (!run.node) {
      run.node = el("li", { class: "run", "data-run-id": run.id });
      runsList.prepend(run.node);
      runsSection.hidden = false;
    }
    const link = safeUrl(run.url);
    run.node.dataset.state = run.state;
    run.node.replaceChildren(
      el("span", { class: "badge" }, run.state),
      el("span", { class: "run-id" }, "Run ", el("code", {}, run.id.slice(0, 8))),
      el("span", { class: "elapsed", "aria-label": "elapsed time" }, elapsed(run)),
      link ? el("a", { href: link, rel: "noreferrer", class: "ci-link" }, "Open in CI") : "",
    );
  }

  function update(run, state, url) {
    const changed = state !== run.state;
    run.state = state;
    if (url) run.url = url;
    if (FINAL.has(state) && !run.endedAt) run.endedAt = Date.now();
    draw(run);
    save();
    if (changed && runStatus) {
      runStatus.textContent = `Run ${run.id.slice(0, 8)} is ${state}` +
        (FINAL.has(state) ? ` after ${elapsed(run)}.` : ".");
    }
    if (FINAL.has(state)) refreshQuota();
  }

  async function poll(run) {
    let delay = 400;
    const deadline = Date.now() + 3600 * 1000;
    while (!FINAL.has(run.state) && Date.now() < deadline) {
      await sleep(delay);
      try {
        const { response, body } = await getJson(`runs/${encodeURIComponent(run.id)}`);
        if (response.status === 404) { update(run, "unknown"); return; }
        if (response.ok && typeof body.status === "string") {
          update(run, body.status, body.url);
          delay = Math.min(delay * 1.25, 5000);
          continue;
        }
      } catch (_) { /* offline for a moment: back off and try again */ }
      delay = Math.min(delay * 2, 15000);
    }
  }

  function track(id, state, url, startedAt) {
    const run = { id, state, url: url || null, startedAt: startedAt || Date.now(), endedAt: null };
    runs.set(id, run);
    update(run, state, url);
    if (!FINAL.has(state)) poll(run);
    return run;
  }

  setInterval(() => {
    for (const run of runs.values()) {
      if (!FINAL.has(run.state) && run.node) {
        run.node.querySelector(".elapsed").textContent = elapsed(run);
      }
    }
  }, 1000);

  // -- the press ---------------------------------------------------------------------------

  function retryDate(response) {
    const seconds = Number(response.headers.get("Retry-After"));
    return Number.isFinite(seconds) && seconds > 0 ? new Date(Date.now() + seconds * 1000) : null;
  }

  function explain(response, body) {
    const code = body.error || "";
    const detail = typeof body.detail === "string" ? body.detail : "";
    const at = retryDate(response);
    const again = at ? ["You can press again ", timeEl(at), "."] : ["Try again later."];
    if (code === "quota_exhausted") return say("warn", "You have used all your triggers. ", ...again);
    if (code === "budget_exhausted") {
      return say("warn", "The pipeline's trigger budget is used up for now. ", ...again);
    }
    if (code === "paused") {
      return say("warn", "Triggers are paused by the operator: ", el("strong", { id: "paused-reason" }, detail));
    }
    if (code === "unavailable" || response.status === 503) {
      return say("error", "The service cannot take triggers right now. Try again in a minute.");
    }
    if (response.status === 502) return say("error", "The pipeline did not start: ", detail);
    if (response.status >= 400 && response.status < 500 && detail) {
      return say("error", "That did not work: ", detail);
    }
    return say("error", "Something went wrong on our side. Try again in a minute.");
  }

  function payload() {
    const params = {};
    for (const [name, value] of new FormData(form).entries()) {
      if (typeof value === "string" && value.trim()) params[name] = value.trim();
    }
    return Object.keys(params).length ? JSON.stringify({ params }) : null;
  }

  form.querySelectorAll("input[data-pattern]").forEach((input) => {
    let pattern = null;
    try { pattern = new RegExp(input.dataset.pattern, "u"); } catch (_) { return; }
    input.addEventListener("input", () => {
      const ok = !input.value.trim() || pattern.test(input.value.trim());
      input.setCustomValidity(ok ? "" : "This value is not allowed here.");
    });
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    say("busy", "Sending your press…");
    const body = payload();
    const headers = { Accept: "application/json" };
    if (body) headers["Content-Type"] = "application/json";
    try {
      const response = await fetch("trigger", { method: "POST", headers, body, cache: "no-store" });
      let data = {};
      try { data = await response.json(); } catch (_) { data = {}; }
      if (response.status === 202 && data.run_id) {
        const banner = $("paused");
        if (banner) banner.remove();
        const existing = runs.get(data.run_id);
        if (data.status === "joined") {
          say("ok", "A run was already on its way; your press joined it and was not counted.");
          if (!existing) track(data.run_id, "running", data.url);
        } else {
          say("ok", "Your run has started. Its progress is shown below.");
          if (!existing) track(data.run_id, data.status || "queued", data.url);
        }
      } else {
        explain(response, data);
      }
    } catch (_) {
      say("error", "Could not reach the service. Check your connection and try again.");
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      refreshQuota();
    }
  });

  // -- start -------------------------------------------------------------------------------

  localizeTimes(document);
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "[]");
    for (const r of saved) {
      if (r && typeof r.id === "string" && /^[A-Za-z0-9]{1,64}$/.test(r.id)) {
        const run = track(r.id, r.state || "queued", r.url, r.startedAt);
        if (r.endedAt) { run.endedAt = r.endedAt; draw(run); }
      }
    }
  } catch (_) { /* nothing saved */ }
  refreshQuota();
})();
