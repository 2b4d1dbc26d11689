// snapledger web console: plain JavaScript against the JSON API under /api/v1.
//
// Live updates: the record views arrive over GET /api/v1/stream (Server-Sent Events whose
// data is the changed record row). Without a token the browser's EventSource reads it
// (it reconnects by itself, resuming with Last-Event-ID). EventSource cannot send an
// Authorization header, so with a token the same stream is read with fetch(), which can;
// it reconnects itself with Last-Event-ID. While the stream is down the console polls the
// lists every few seconds.
//
// Tokens: when the API answers 401 the console asks for a bearer token and keeps it in
// sessionStorage only (this tab, until it closes). Without a token, mutations name the
// actor with X-Snapledger-Actor: console.
"use strict";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "snapledger.token";
  const POLL_MS = 3000;
  const PAGE = 100;
  const EVENTS_WINDOW = 150;

  const $ = (id) => document.getElementById(id);

  const state = {
    policies: new Map(),
    backups: new Map(),
    restores: new Map(),
    cursors: { policies: null, backups: null, restores: null },
    showDeleted: false,
    // Rows the stream delivered, by order of arrival: a list read that was already under way
    // must not overwrite them with older data (the stream brings every later change anyway).
    seq: 0,
    touched: { policies: new Map(), backups: new Map(), restores: new Map() },
    position: 0, // last stream position seen (SSE id)
    live: null, // {close()} of the running stream reader
    liveState: "connecting",
    pollTimer: null,
    authBlocked: false,
    // The Event Log panel; pending: "reset" | "newer" asked for while a load was running.
    events: { scope: "", items: [], older: null, newest: 0, loading: false, pending: false },
    taskLog: null, // {kind, id, url, name, after, opener}
  };

  // ------------------------------------------------------------------ API access
  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status;
      this.field = field || null;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function authHeaders(method) {
    const headers = {};
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    else if (method !== "GET") headers["X-Snapledger-Actor"] = "console";
    return headers;
  }

  function requestKey() {
    if (crypto.randomUUID) return `console-${crypto.randomUUID()}`;
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  // A mutation is sent under an Idempotency-Key and, when the API answers 503 or cannot be
  // reached, sent again under the same key: the server acts once and answers the first outcome.
  const RETRIES = 6;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function api(method, path, body) {
    const headers = { Accept: "application/json", ...authHeaders(method) };
    if (method !== "GET") headers["Idempotency-Key"] = requestKey();
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    for (let attempt = 1; ; attempt++) {
      const last = method === "GET" || attempt >= RETRIES;
      try {
        res = await fetch(path, init);
      } catch (err) {
        if (last) throw new ApiError(0, `cannot reach the API: ${err.message}`, null);
        await sleep(1000);
        continue;
      }
      if (res.status !== 503 || last) break;
      const after = Number(res.headers.get("Retry-After"));
      await sleep(Math.min(Number.isFinite(after) && after > 0 ? after : 2, 5) * 1000);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${res.status} ${res.statusText}`;
    if (res.status === 401) {
      askForToken(message);
      throw new ApiError(401, message, "Authorization");
    }
    if (!res.ok) throw new ApiError(res.status, message, data ? data.field : null);
    return data;
  }

  function errorText(err) {
    if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
    const status = err.status ? `${err.status}: ` : "";
    const names = err.field && !err.message.includes(err.field) ? ` (field: ${err.field})` : "";
    return `${status}${err.message}${names}`;
  }

  // ------------------------------------------------------------------ small helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function timeNode(iso, empty = "—") {
    if (!iso) return document.createTextNode(empty);
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return document.createTextNode(iso);
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const title = `${d.toISOString()} (UTC)`;
    return el("time", { datetime: iso, title }, el("span", {}, day), " ", el("span", {}, clock));
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = Number(n);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
  }

  function elapsed(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Number(seconds);
    if (s < 60) return `${s.toFixed(1)} s`;
    const total = Math.round(s);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const rest = total % 60;
    return h ? `${h} h ${pad(m)} min` : `${m} min ${pad(rest)} s`;
  }

  function duration(seconds) {
    if (!seconds) return "";
    for (const [unit, size] of [["w", 604800], ["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds % size === 0) return `${seconds / size}${unit}`;
    }
    return `${seconds}s`;
  }

  const count = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString());
  const badge = (status) => el("span", { class: "badge", "data-status": status }, status);

  function progressNode(row, label) {
    const pct = Math.max(0, Math.min(100, Number(row.progress) || 0));
    const shown = Math.floor(pct);
    return el(
      "div",
      { class: "progress" },
      el("progress", { max: 100, value: pct, "aria-label": `Progress of ${label}` }, `${shown} %`),
      el("span", { class: "pct" }, `${shown} %`),
      row.status === "running" && row.bytes_per_second
        ? el(
            "span",
            { class: "pace" },
            ` ${bytes(row.bytes_per_second)}/s` + (row.eta_seconds != null ? `, ${duration(row.eta_seconds)} left` : ""),
          )
        : "",
    );
  }

  const byNewest = (a, b) =>
    a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? 1 : a.id > b.id ? -1 : 0;

  function announce(text) {
    const node = $("announce");
    node.textContent = "";
    window.setTimeout(() => {
      node.textContent = text;
    }, 30);
  }

  function showAlert(id, text) {
    $(id).textContent = text || "";
  }

  // ------------------------------------------------------------------ loading
  async function loadList(kind, more) {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (more && state.cursors[kind]) params.set("cursor", state.cursors[kind]);
    const start = state.seq;
    const page = await api("GET", `${API}/${kind}?${params}`);
    const fresher = (id) => (state.touched[kind].get(id) || 0) > start;
    if (!more) for (const id of [...state[kind].keys()]) if (!fresher(id)) state[kind].delete(id);
    for (const row of page.items) if (!fresher(row.id)) state[kind].set(row.id, row);
    state.cursors[kind] = page.next_cursor;
  }

  // Where the event store and the views stand, from /readyz (it answers them when lagging too).
  async function viewsPosition() {
    try {
      const res = await fetch("/readyz", { headers: authHeaders("GET"), cache: "no-store" });
      const ready = await res.json();
      return { views: Number(ready.views_position) || 0, events: Number(ready.position) || 0 };
    } catch {
      return { views: 0, events: 0 };
    }
  }

  async function refreshLists() {
    await Promise.all([loadList("policies"), loadList("backups"), loadList("restores")]);
    scheduleRender();
  }

  // Update: every list, the Event Log and an open task log. Returns the views position
  // read before the lists, so the stream can resume from there without a gap.
  async function refreshAll() {
    showAlert("page-alert", "");
    const pos = await viewsPosition();
    try {
      await refreshLists();
    } catch (err) {
      if (err.status !== 401) showAlert("page-alert", `Could not load the records: ${errorText(err)}`);
      throw err;
    }
    await Promise.all([loadEvents(true), state.taskLog ? loadTaskLog(false) : null]);
    return pos.views;
  }

  // ------------------------------------------------------------------ live updates
  function setLive(mode, text) {
    state.liveState = mode;
    const node = $("live-status");
    node.dataset.state = mode;
    node.textContent = text;
  }

  function startPolling() {
    if (state.pollTimer || state.authBlocked) return;
    state.pollTimer = window.setInterval(pollTick, POLL_MS);
  }

  // While the stream is down: read the lists again, and try the stream once more.
  async function pollTick() {
    try {
      const position = state.live ? null : await viewsPosition();
      await refreshLists();
      eventsChanged();
      if (position && !state.live && !state.authBlocked) startLive(position.views);
    } catch {
      // the status line says polling; a 401 shows the token panel
    }
  }

  function stopPolling() {
    if (state.pollTimer) window.clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  function stopLive() {
    if (state.live) state.live.close();
    state.live = null;
  }

  function startLive(after) {
    stopLive();
    if (state.authBlocked) return;
    state.position = Math.max(state.position, after || 0);
    if (token()) streamWithFetch();
    else streamWithEventSource();
  }

  function onStreamMessage(kind, data, id) {
    if (kind === "bye") {  // the server is shutting down: not live, and it says so
      setLive("polling", `Server stopped; polling every ${POLL_MS / 1000} s`);
      startPolling();
      return;
    }
    const position = Number(id);
    if (Number.isFinite(position)) state.position = Math.max(state.position, position);
    let row;
    try {
      row = JSON.parse(data);
    } catch {
      return;
    }
    const name = { policy: "policies", backup: "backups", restore: "restores" }[kind];
    if (!name || !row || !row.id) return;
    state.seq += 1;
    state.touched[name].set(row.id, state.seq);
    state[name].set(row.id, row);
    scheduleRender();
    eventsChanged();
    if (state.taskLog && state.taskLog.id === row.id) taskLogChanged();
  }

  function streamOpened() {
    setLive("live", "Live");
    stopPolling();
  }

  function streamInterrupted() {
    setLive("polling", `Reconnecting; polling every ${POLL_MS / 1000} s`);
    startPolling();
  }

  function streamWithEventSource() {
    const source = new EventSource(`${API}/stream?after=${state.position}`);
    let closed = false;
    source.onopen = streamOpened;
    for (const kind of ["policy", "backup", "restore", "bye"]) {
      source.addEventListener(kind, (e) => onStreamMessage(kind, e.data, e.lastEventId));
    }
    source.onerror = () => {
      if (closed) return;
      streamInterrupted();
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (not a dropped connection): find out why, then retry.
        source.close();
        state.live = null;
        api("GET", `${API}/policies?limit=1`)
          .then(() => window.setTimeout(() => state.live || startLive(state.position), POLL_MS))
          .catch(() => {});
      }
    };
    state.live = {
      close() {
        closed = true;
        source.close();
      },
    };
  }

  function streamWithFetch() {
    const controller = new AbortController();
    let stopped = false;
    state.live = {
      close() {
        stopped = true;
        controller.abort();
      },
    };
    const run = async () => {
      while (!stopped) {
        try {
          const last = String(state.position);
          const res = await fetch(`${API}/stream?after=${last}`, {
            headers: { Accept: "text/event-stream", "Last-Event-ID": last, ...authHeaders("GET") },
            cache: "no-store",
            signal: controller.signal,
          });
          if (res.status === 401) {
            stopped = true;
            state.live = null;
            askForToken("the stream refused the token");
            return;
          }
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          streamOpened();
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let end;
            while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
              const message = { event: "message", data: [], id: null };
              for (const line of block.split(/\r?\n/)) {
                if (!line || line.startsWith(":")) continue;
                const colon = line.indexOf(":");
                const field = colon < 0 ? line : line.slice(0, colon);
                const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
                if (field === "event") message.event = value;
                else if (field === "data") message.data.push(value);
                else if (field === "id") message.id = value;
              }
              if (message.data.length) onStreamMessage(message.event, message.data.join("\n"), message.id);
              else if (message.id !== null && Number.isFinite(Number(message.id))) {
                state.position = Math.max(state.position, Number(message.id));
              }
            }
          }
        } catch (err) {
          if (stopped) return;
        }
        if (stopped) return;
        streamInterrupted();
        await new Promise((resolve) => window.setTimeout(resolve, 1000));
      }
    };
    run();
  }

  // ------------------------------------------------------------------ tokens
  function askForToken(reason) {
    const hadToken = Boolean(token());
    if (hadToken) sessionStorage.removeItem(TOKEN_KEY);
    const first = !state.authBlocked; // parallel requests all answer 401: keep the first reason
    state.authBlocked = true;
    document.body.classList.add("auth-blocked"); // the records shown may be stale or not ours
    stopLive();
    stopPolling();
    setLive("offline", "Token required");
    $("forget-token").hidden = true;
    if (first || hadToken) {
      $("token-reason").textContent = hadToken
        ? `The API refused the token (401: ${reason}). Enter another.`
        : `The API answered 401: ${reason}.`;
    }
    const panel = $("token-panel");
    if (panel.hidden) {
      panel.hidden = false;
      $("token-input").focus();
    }
  }

  async function useToken(event) {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) {
      showAlert("token-alert", "Enter the bearer token.");
      $("token-input").setAttribute("aria-invalid", "true");
      $("token-input").focus();
      return;
    }
    $("token-input").removeAttribute("aria-invalid");
    showAlert("token-alert", "");
    sessionStorage.setItem(TOKEN_KEY, value);
    state.authBlocked = false;
    $("token-panel").hidden = true;
    $("token-input").value = "";
    $("forget-token").hidden = false;
    await start();
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    $("forget-token").hidden = true;
    stopLive();
    start();
  }

  // ------------------------------------------------------------------ mutations
  // Runs one mutation from a button; errors land in the section's alert.
  async function act(button, alertId, fn, done) {
    if (button && button.getAttribute("aria-busy") === "true") return;
    if (button) button.setAttribute("aria-busy", "true");
    try {
      const result = await fn();
      showAlert(alertId, "");
      if (done) announce(done);
      afterMutation();
      return result;
    } catch (err) {
      showAlert(alertId, errorText(err));
      return undefined;
    } finally {
      if (button) button.removeAttribute("aria-busy");
    }
  }

  // The stream brings the change; without it, read the lists again.
  function afterMutation() {
    if (state.liveState !== "live") refreshLists().catch(() => {});
    eventsChanged();
  }

  const policyUrl = (id) => `${API}/policies/${encodeURIComponent(id)}`;
  // The Event Log of a policy, its snapshots and restores: also once the policy is deleted.
  const policyEventsUrl = (id) => `${API}/events?policy_id=${encodeURIComponent(id)}`;

  // ------------------------------------------------------------------ rendering
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    window.setTimeout(() => {
      renderQueued = false;
      render();
    }, 30);
  }

  function visible(map) {
    const rows = [...map.values()].filter((r) => state.showDeleted || r.status !== "deleted");
    return rows.sort(byNewest);
  }

  // Keyed update: a row is rebuilt only when its signature changed, and the focused button
  // keeps focus, so keyboard users are not thrown out by live updates.
  function syncTable(tbody, rows, signature, build) {
    const existing = new Map([...tbody.children].map((tr) => [tr.dataset.id, tr]));
    let previous = null;
    for (const row of rows) {
      let tr = existing.get(row.id);
      existing.delete(row.id);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.id = row.id;
      }
      const sig = signature(row);
      if (tr.dataset.sig !== sig) {
        const active = document.activeElement;
        const key = active && tr.contains(active) ? active.dataset.focusKey : null;
        tr.replaceChildren(...build(row));
        tr.className = row.status === "deleted" ? "is-deleted" : "";
        tr.dataset.sig = sig;
        if (key) {
          const again = tr.querySelector(`[data-focus-key="${key}"]`);
          if (again) again.focus();
        }
      }
      const wanted = previous ? previous.nextSibling : tbody.firstChild;
      if (wanted !== tr) tbody.insertBefore(tr, wanted);
      previous = tr;
    }
    for (const tr of existing.values()) tr.remove();
    return rows.length;
  }

  function button(text, label, key, onclick, cls) {
    return el("button", { type: "button", class: cls, "aria-label": label, "data-focus-key": key, onclick }, text);
  }

  function runningOf(policyId) {
    return [...state.backups.values()].filter(
      (b) => b.policy_id === policyId && (b.status === "running" || b.status === "requested"),
    );
  }

  function policyCells(p) {
    const running = runningOf(p.id);
    const state_ = el(
      "td",
      {},
      badge(p.status),
      running.map((b) =>
        el(
          "span",
          { class: "sub" },
          `${b.sub_name} ${b.status}${b.status === "running" ? ` ${Math.floor(b.progress)} %` : ""}`,
        ),
      ),
    );
    const retention = [];
    if (p.retention && p.retention.keep_last) retention.push(`keep last ${p.retention.keep_last}`);
    if (p.retention && p.retention.expire_after_seconds) {
      retention.push(`expire after ${duration(p.retention.expire_after_seconds)}`);
    }
    const actions = el("div", { class: "actions" });
    if (p.status !== "deleted") {
      actions.append(
        button("Take a Snapshot", `Take a Snapshot of ${p.name}`, "snapshot", (e) => takeSnapshot(e.currentTarget, p)),
      );
      if (p.status === "active") {
        actions.append(button("Stop", `Stop ${p.name}`, "stop", (e) => stopPolicy(e.currentTarget, p)));
      }
      actions.append(
        button("Rebuild", `Rebuild ${p.name}`, "rebuild", (e) => rebuildPolicy(e.currentTarget, p)),
        button("Edit", `Edit ${p.name}`, "edit", (e) => openPolicyDialog(p, e.currentTarget)),
        button("Delete", `Delete ${p.name}`, "delete", (e) => openDeleteDialog(p, e.currentTarget)),
      );
    }
    actions.append(button("Event Log", `Event Log of ${p.name}`, "events", () => showPolicyEvents(p)));
    return [
      el("th", { scope: "row" }, p.name),
      state_,
      el("td", {}, `${p.source} → ${p.storage}`),
      el(
        "td",
        {},
        p.schedule ? el("code", {}, p.schedule) : "manual only",
        p.schedule ? el("span", { class: "sub" }, p.timezone || "UTC") : null,
      ),
      el("td", { class: "time" }, p.status === "active" ? timeNode(p.next_run_at) : "—"),
      el("td", { class: "time" }, timeNode(p.last_success_at)),
      el(
        "td",
        { class: "reason" },
        el("span", { class: "time" }, timeNode(p.last_failure_at)),
        p.last_failure_reason ? el("span", { class: "sub error" }, p.last_failure_reason) : null,
      ),
      el("td", {}, retention.length ? retention.join(", ") : "keep all"),
      el("td", {}, actions),
    ];
  }

  function statusCell(row) {
    const stopping = row.stop_requested && (row.status === "running" || row.status === "requested");
    return el(
      "td",
      {},
      badge(row.status),
      stopping ? el("span", { class: "sub" }, "stopping…") : null,
      row.error ? el("span", { class: "sub error" }, row.error) : null,
    );
  }

  function downloadCell(b) {
    if (!b.download_url) {
      return el("td", { class: "file" }, b.file_name, el("span", { class: "sub" }, "no archive to download"));
    }
    const link = el(
      "a",
      { href: b.download_url, download: b.file_name, "data-focus-key": "download", title: "Download the archive" },
      b.file_name,
    );
    link.addEventListener("click", (e) => downloadWithToken(e, b));
    return el("td", { class: "file" }, link);
  }

  function backupCells(b) {
    const active = b.status === "running" || b.status === "requested";
    const actions = el("div", { class: "actions" });
    if (active && !b.stop_requested) {
      actions.append(button("Stop", `Stop ${b.sub_name}`, "stop", (e) => stopBackup(e.currentTarget, b)));
    }
    if (b.status === "completed") {
      actions.append(
        button("Restore", `Restore ${b.sub_name}`, "restore", (e) => openRestoreDialog(b, e.currentTarget)),
      );
    }
    if (b.status !== "deleted") {
      actions.append(button("Delete", `Delete ${b.sub_name}`, "delete", (e) => deleteBackup(e.currentTarget, b)));
    }
    return [
      el("th", { scope: "row" }, b.sub_name),
      downloadCell(b),
      el("td", { class: "task" }, taskButton("backup", b)),
      el("td", { class: "num" }, elapsed(b.elapsed_seconds)),
      el("td", { class: "num" }, count(b.items)),
      el("td", {}, progressNode(b, b.sub_name)),
      el("td", { class: "time" }, timeNode(b.created_at)),
      el("td", { class: "time" }, timeNode(b.expires_at, b.status === "completed" ? "never" : "—")),
      el("td", { class: "num" }, bytes(b.transferred_bytes)),
      statusCell(b),
      el("td", {}, actions),
    ];
  }

  function taskButton(kind, row) {
    if (!row.task_name) return document.createTextNode("—");
    const open = (e) => openTaskLog(kind, row, e.currentTarget);
    return button(row.task_name, `Task log ${row.task_name}`, "log", open, "link");
  }

  function snapshotLabel(r) {
    const snap = state.backups.get(r.snapshot_id);
    return snap ? `${snap.sub_name}` : r.snapshot_id.slice(0, 8);
  }

  function restoreCells(r) {
    const active = r.status === "running" || r.status === "requested";
    const actions = el("div", { class: "actions" });
    if (active && !r.stop_requested) {
      actions.append(button("Stop", `Stop ${r.sub_name}`, "stop", (e) => stopRestore(e.currentTarget, r)));
    }
    const snap = state.backups.get(r.snapshot_id);
    const checks = r.consistency ? Object.values(r.consistency) : [];
    const verified = checks.length
      ? `${checks.filter((c) => c.ok).length}/${checks.length} collections match`
      : null;
    return [
      el(
        "th",
        { scope: "row" },
        r.sub_name,
        el("span", { class: "sub" }, `target ${r.target}${r.dry_run ? " (dry run)" : ""}`),
      ),
      el("td", { class: "file" }, snapshotLabel(r), snap ? el("span", { class: "sub" }, snap.file_name) : null),
      el("td", { class: "task" }, taskButton("restore", r)),
      el("td", { class: "num" }, elapsed(r.elapsed_seconds)),
      el("td", { class: "num" }, count(r.items)),
      el("td", {}, progressNode(r, r.sub_name)),
      el("td", { class: "time" }, timeNode(r.created_at)),
      el("td", {}, [...statusCell(r).childNodes], verified ? el("span", { class: "sub" }, verified) : null),
      el("td", {}, actions),
    ];
  }

  function render() {
    const policies = visible(state.policies);
    const backups = visible(state.backups);
    const restores = visible(state.restores);
    syncTable(
      $("policies-table").tBodies[0],
      policies,
      (p) =>
        JSON.stringify(p) +
        JSON.stringify(runningOf(p.id).map((b) => [b.sub_name, b.status, Math.floor(b.progress)])),
      policyCells,
    );
    syncTable($("backups-table").tBodies[0], backups, (b) => JSON.stringify(b), backupCells);
    syncTable(
      $("restores-table").tBodies[0],
      restores,
      (r) => JSON.stringify(r) + snapshotLabel(r),
      restoreCells,
    );
    $("policies-empty").hidden = policies.length > 0;
    $("backups-empty").hidden = backups.length > 0;
    $("restores-empty").hidden = restores.length > 0;
    for (const kind of ["policies", "backups", "restores"]) $(`${kind}-more`).hidden = !state.cursors[kind];
    renderScopeOptions();
    renderNameSuggestions();
  }

  function renderScopeOptions() {
    const select = $("events-scope");
    const wanted = [["", "All events"]];
    for (const p of [...state.policies.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      wanted.push([p.id, `Policy ${p.name}${p.status === "deleted" ? " (deleted)" : ""}`]);
    }
    const current = [...select.options].map((o) => `${o.value}\u0000${o.textContent}`).join("\u0001");
    if (current === wanted.map(([v, t]) => `${v}\u0000${t}`).join("\u0001")) return;
    const value = select.value;
    select.replaceChildren(...wanted.map(([v, t]) => el("option", { value: v }, t)));
    select.value = wanted.some(([v]) => v === value) ? value : "";
  }

  function renderNameSuggestions() {
    const fill = (id, names) => {
      const list = $(id);
      const text = [...names].sort().join("\n");
      if (list.dataset.names === text) return;
      list.dataset.names = text;
      list.replaceChildren(...[...names].sort().map((n) => el("option", { value: n })));
    };
    const policies = [...state.policies.values()];
    fill("source-names", new Set(["demo", ...policies.map((p) => p.source)]));
    fill("storage-names", new Set(["local", ...policies.map((p) => p.storage)]));
  }

  // ------------------------------------------------------------------ policy actions
  function takeSnapshot(btn, p) {
    return act(
      btn,
      "policies-alert",
      () => api("POST", `${policyUrl(p.id)}/snapshots`),
      `Snapshot of ${p.name} requested.`,
    );
  }

  function stopPolicy(btn, p) {
    return act(btn, "policies-alert", () => api("POST", `${policyUrl(p.id)}/stop`), `Policy ${p.name} stopped.`);
  }

  function rebuildPolicy(btn, p) {
    confirmDialog(
      `Rebuild ${p.name}?`,
      `Rebuild stops ${p.name}'s running snapshots, cleans up and takes a fresh snapshot.`,
      "Rebuild",
      btn,
      () => api("POST", `${policyUrl(p.id)}/rebuild`),
      `Policy ${p.name} rebuilding.`,
      "policies-alert",
    );
  }

  function showPolicyEvents(p) {
    $("events-scope").value = p.id;
    loadEvents(true);
    $("events").scrollIntoView({ block: "start" });
    $("events-h").focus({ preventScroll: true });
  }

  // ------------------------------------------------------------------ dialogs
  function wireDialog(dialog) {
    for (const closer of dialog.querySelectorAll("[data-close]")) {
      closer.addEventListener("click", () => dialog.close());
    }
    dialog.addEventListener("close", () => {
      const opener = dialog._opener;
      dialog._opener = null;
      returnFocus(opener);
    });
  }

  // Where focus goes back to: the opener, or its successor if live updates re-rendered its row.
  function openerOf(node) {
    if (!node) return null;
    const tr = node.closest("tr");
    return { node, rowId: tr ? tr.dataset.id : null, key: node.dataset.focusKey || null };
  }

  function returnFocus(opener) {
    if (!opener) return;
    if (opener.node.isConnected) {
      opener.node.focus();
      return;
    }
    if (!opener.rowId || !opener.key) return;
    const row = document.querySelector(`tr[data-id="${opener.rowId}"]`);
    const again = row && row.querySelector(`[data-focus-key="${opener.key}"]`);
    if (again) again.focus();
  }

  function openDialog(dialog, opener) {
    dialog._opener = openerOf(opener);
    dialog.showModal();
  }

  const POLICY_FIELDS = ["name", "source", "storage", "schedule", "timezone", "keep_last", "expire_after"];
  const FIELD_OF = {
    "retention.keep_last": "keep_last",
    "retention.expire_after": "expire_after",
    retention: "keep_last",
  };
  let editing = null; // {policy, initial}

  function clearFieldErrors(form, alertId) {
    showAlert(alertId, "");
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
  }

  // The API's {error, field}: the message goes beside the field it names, and on top.
  function showFieldError(prefix, alertId, err, fieldMap) {
    const field = err.field ? (fieldMap[err.field] || err.field) : null;
    const input = field ? $(`${prefix}-${field}`) : null;
    showAlert(alertId, errorText(err));
    if (input) {
      input.setAttribute("aria-invalid", "true");
      $(`${prefix}-${field}-error`).textContent = err.message;
      input.focus();
    }
  }

  function openPolicyDialog(policy, opener) {
    const form = $("policy-form");
    clearFieldErrors(form, "policy-form-alert");
    const values = policy
      ? {
          name: policy.name,
          source: policy.source,
          storage: policy.storage,
          schedule: policy.schedule || "",
          timezone: policy.timezone || "UTC",
          keep_last: policy.retention && policy.retention.keep_last ? String(policy.retention.keep_last) : "",
          expire_after: policy.retention ? duration(policy.retention.expire_after_seconds) : "",
        }
      : { name: "", source: "demo", storage: "local", schedule: "", timezone: "UTC", keep_last: "", expire_after: "" };
    for (const f of POLICY_FIELDS) $(`pf-${f}`).value = values[f];
    const expiry = /^(\d+)([smhdw])$/.exec(values.expire_after);
    const units = [...$("pf-expire_after_unit").options].map((o) => o.value);
    if (expiry && !units.includes(expiry[2])) {  // seconds: shown in minutes when whole, else as is
      const seconds = Number(expiry[1]);
      $("pf-expire_after").value = seconds % 60 === 0 ? String(seconds / 60) : String(seconds);
      $("pf-expire_after_unit").value = "m";
    } else {
      $("pf-expire_after").value = expiry ? expiry[1] : "";
      $("pf-expire_after_unit").value = expiry ? expiry[2] : "d";
    }
    editing = policy ? { policy, initial: formValues() } : null;
    $("policy-dialog-h").textContent = policy ? `Edit policy ${policy.name}` : "Create policy";
    $("policy-submit").textContent = policy ? "Save changes" : "Create policy";
    openDialog($("policy-dialog"), opener);
    $("pf-name").focus();
  }

  function formValues() {
    const out = {};
    for (const f of POLICY_FIELDS) out[f] = $(`pf-${f}`).value.trim();
    // The unit comes from its list: a bare number is never sent (the API refuses one).
    if (out.expire_after) out.expire_after = `${out.expire_after}${$("pf-expire_after_unit").value}`;
    return out;
  }

  function retentionOf(v) {
    if (!v.keep_last && !v.expire_after) return null;
    const retention = {};
    // Anything not a plain number goes to the API as typed, so its message names the field.
    if (v.keep_last) retention.keep_last = /^\d+$/.test(v.keep_last) ? Number(v.keep_last) : v.keep_last;
    if (v.expire_after) retention.expire_after = v.expire_after;
    return retention;
  }

  async function submitPolicy(event) {
    event.preventDefault();
    const form = $("policy-form");
    clearFieldErrors(form, "policy-form-alert");
    const v = formValues();
    let body;
    if (editing) {
      body = {};
      const before = editing.initial;
      for (const f of ["name", "source", "storage"]) if (v[f] !== before[f]) body[f] = v[f];
      if (v.schedule !== before.schedule) body.schedule = v.schedule || null;
      if (v.timezone !== before.timezone) body.timezone = v.timezone || null;
      if (v.keep_last !== before.keep_last || v.expire_after !== before.expire_after) body.retention = retentionOf(v);
      if (!Object.keys(body).length) {
        $("policy-dialog").close();
        announce("Nothing changed.");
        return;
      }
    } else {
      body = { name: v.name, source: v.source, storage: v.storage };
      if (v.schedule) body.schedule = v.schedule;
      if (v.timezone) body.timezone = v.timezone;
      const retention = retentionOf(v);
      if (retention) body.retention = retention;
    }
    const submit = $("policy-submit");
    if (submit.getAttribute("aria-busy") === "true") return;
    submit.setAttribute("aria-busy", "true");
    try {
      if (editing) await api("PATCH", policyUrl(editing.policy.id), body);
      else await api("POST", `${API}/policies`, body);
      $("policy-dialog").close();
      announce(editing ? `Policy ${v.name} saved.` : `Policy ${v.name} created.`);
      showAlert("policies-alert", "");
      afterMutation();
    } catch (err) {
      showFieldError("pf", "policy-form-alert", err, FIELD_OF);
    } finally {
      submit.removeAttribute("aria-busy");
    }
  }

  let deleting = null;
  function openDeleteDialog(policy, opener) {
    deleting = policy;
    clearFieldErrors($("delete-form"), "delete-form-alert");
    $("keep-files").checked = false;
    $("delete-dialog-h").textContent = `Delete policy ${policy.name}?`;
    $("delete-dialog-text").textContent =
      `Deleting ${policy.name} stops its schedule and running snapshots and removes its ` +
      `${policy.snapshots_count || 0} snapshot(s) from the records. Unless you keep them, ` +
      `their archive files are removed from storage ${policy.storage}.`;
    openDialog($("delete-dialog"), opener);
  }

  async function submitDelete(event) {
    event.preventDefault();
    if (!deleting) return;
    const keep = $("keep-files").checked;
    const policy = deleting;
    const submit = $("delete-submit");
    if (submit.getAttribute("aria-busy") === "true") return;
    submit.setAttribute("aria-busy", "true");
    try {
      await api("DELETE", `${policyUrl(policy.id)}${keep ? "?keep_files=true" : ""}`);
      $("delete-dialog").close();
      announce(`Policy ${policy.name} deleted${keep ? "; archive files kept" : ""}.`);
      afterMutation();
    } catch (err) {
      showAlert("delete-form-alert", errorText(err));
    } finally {
      submit.removeAttribute("aria-busy");
    }
  }

  let confirming = null;
  function confirmDialog(title, text, label, opener, fn, done, alertId) {
    confirming = { fn, done, alertId };
    showAlert("confirm-form-alert", "");
    $("confirm-dialog-h").textContent = title;
    $("confirm-dialog-text").textContent = text;
    $("confirm-submit").textContent = label;
    openDialog($("confirm-dialog"), opener);
  }

  async function submitConfirm(event) {
    event.preventDefault();
    if (!confirming) return;
    const submit = $("confirm-submit");
    if (submit.getAttribute("aria-busy") === "true") return;
    submit.setAttribute("aria-busy", "true");
    try {
      await confirming.fn();
      $("confirm-dialog").close();
      showAlert(confirming.alertId, "");
      announce(confirming.done);
      afterMutation();
    } catch (err) {
      showAlert("confirm-form-alert", errorText(err));
    } finally {
      submit.removeAttribute("aria-busy");
    }
  }

  // ------------------------------------------------------------------ backup and restore actions
  function stopBackup(btn, b) {
    const stop = () => api("POST", `${API}/backups/${b.id}/stop`);
    return act(btn, "backups-alert", stop, `Stop of ${b.sub_name} requested.`);
  }

  function deleteBackup(btn, b) {
    confirmDialog(
      `Delete ${b.sub_name}?`,
      b.status === "completed"
        ? `Its archive ${b.file_name} is removed from storage ${b.storage}.`
        : `The record of ${b.sub_name} (${b.status}) is marked deleted.`,
      "Delete snapshot",
      btn,
      () => api("DELETE", `${API}/backups/${b.id}`),
      `${b.sub_name} deleted.`,
      "backups-alert",
    );
  }

  function stopRestore(btn, r) {
    const stop = () => api("POST", `${API}/restores/${r.id}/stop`);
    return act(btn, "restores-alert", stop, `Stop of ${r.sub_name} requested.`);
  }

  let restoring = null;
  function openRestoreDialog(b, opener) {
    restoring = b;
    clearFieldErrors($("restore-form"), "restore-form-alert");
    $("restore-dialog-h").textContent = `Restore ${b.sub_name}`;
    $("restore-dialog-text").textContent = `Streams ${b.file_name} (${count(b.items)} items) into a restore target.`;
    $("rf-target").value = "scratch";
    $("rf-dry-run").checked = false;
    const unverified = b.verification === "unverified";
    $("rf-trust-box").hidden = !unverified;
    $("rf-trust").checked = false;
    $("rf-trust-why").textContent = unverified
      ? `${b.sub_name} was imported from storage ${b.storage || ""} without a signature: nothing says this ` +
        "installation's writers made it, and a restore runs what the archive holds."
      : "";
    openDialog($("restore-dialog"), opener);
    $("rf-target").focus();
    $("rf-target").select();
  }

  async function submitRestore(event) {
    event.preventDefault();
    if (!restoring) return;
    const b = restoring;
    clearFieldErrors($("restore-form"), "restore-form-alert");
    const body = { snapshot_id: b.id, target: $("rf-target").value.trim() };
    if ($("rf-dry-run").checked) body.dry_run = true;
    if (!$("rf-trust-box").hidden && $("rf-trust").checked) body.trust_unverified = true;
    const submit = $("restore-submit");
    if (submit.getAttribute("aria-busy") === "true") return;
    submit.setAttribute("aria-busy", "true");
    try {
      await api("POST", `${API}/restores`, body);
      $("restore-dialog").close();
      announce(`Restore of ${b.sub_name} into ${body.target} requested.`);
      afterMutation();
    } catch (err) {
      showFieldError("rf", "restore-form-alert", err, {});
    } finally {
      submit.removeAttribute("aria-busy");
    }
  }

  // Without a token the link downloads natively (streamed to disk). A token must go in a
  // header, which a link cannot send, so the archive is fetched and handed over as a blob.
  async function downloadWithToken(event, b) {
    if (!token()) return;
    event.preventDefault();
    try {
      const res = await fetch(b.download_url, { headers: authHeaders("GET") });
      if (res.status === 401) {
        askForToken("a valid bearer token is required");
        return;
      }
      if (!res.ok) {
        const data = await res.json().catch(() => null);
        throw new ApiError(res.status, data && data.error ? data.error : `HTTP ${res.status}`, data && data.field);
      }
      const url = URL.createObjectURL(await res.blob());
      const link = el("a", { href: url, download: b.file_name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      showAlert("backups-alert", `Download of ${b.file_name} failed: ${errorText(err)}`);
    }
  }

  // ------------------------------------------------------------------ task log
  function openTaskLog(kind, row, opener) {
    state.taskLog = { kind, id: row.id, url: row.log_url, name: row.task_name, after: 0, opener: openerOf(opener) };
    $("task-log-h").textContent = `Task log: ${row.task_name}`;
    $("task-log-meta").textContent = `${kind === "backup" ? "Snapshot" : "Restore"} ${row.sub_name}`;
    $("task-log-lines").replaceChildren();
    showAlert("task-log-alert", "");
    const panel = $("task-log");
    panel.hidden = false;
    panel.scrollIntoView({ block: "start" });
    $("task-log-h").focus({ preventScroll: true });
    loadTaskLog(false);
  }

  function closeTaskLog() {
    const opener = state.taskLog && state.taskLog.opener;
    state.taskLog = null;
    $("task-log").hidden = true;
    returnFocus(opener);
  }

  let taskLogTimer = null;
  function taskLogChanged() {
    if (taskLogTimer) return;
    taskLogTimer = window.setTimeout(() => {
      taskLogTimer = null;
      if (state.taskLog) loadTaskLog(true);
    }, 400);
  }

  async function loadTaskLog(newerOnly) {
    const log = state.taskLog;
    if (!log) return;
    if (!newerOnly) {
      log.after = 0;
      $("task-log-lines").replaceChildren();
    }
    try {
      for (;;) {
        const page = await api("GET", `${log.url}${log.url.includes("?") ? "&" : "?"}after=${log.after}&limit=500`);
        if (state.taskLog !== log) return;
        const list = $("task-log-lines");
        for (const e of page.items) {
          list.append(
            el("li", {}, timeNode(e.time), el("span", { class: "etype" }, e.type), el("span", {}, e.message)),
          );
          log.after = Math.max(log.after, e.position);
        }
        if (!page.next_cursor) break;
      }
      const list = $("task-log-lines");
      list.scrollTop = list.scrollHeight;
      showAlert("task-log-alert", "");
    } catch (err) {
      showAlert("task-log-alert", `Could not read the task log: ${errorText(err)}`);
    }
  }

  // ------------------------------------------------------------------ event log
  function eventItem(e) {
    return el(
      "li",
      { "data-position": e.position, "data-type": e.type },
      el(
        "details",
        {},
        el(
          "summary",
          {},
          timeNode(e.time),
          el("span", { class: "etype" }, e.type),
          el("span", { class: "msg" }, e.message),
          el("span", { class: "actor" }, `actor: ${e.actor || "—"}`),
        ),
        el("pre", { "aria-label": `Raw event ${e.position}` }, JSON.stringify(e, null, 2)),
      ),
    );
  }

  function renderEvents(reset) {
    const ev = state.events;
    const list = $("events-list");
    const hideProgress = $("events-hide-progress").checked;
    if (reset) list.replaceChildren();
    const shown = new Set([...list.children].map((li) => Number(li.dataset.position)));
    // Newest first: new entries go on top, older pages at the bottom.
    let anchor = list.firstChild;
    for (const e of ev.items) {
      if (shown.has(e.position)) {
        anchor = null;
        continue;
      }
      const li = eventItem(e);
      if (anchor !== null) list.insertBefore(li, anchor);
      else list.append(li);
    }
    for (const li of list.children) li.hidden = hideProgress && /Progressed$/.test(li.dataset.type);
    $("events-empty").hidden = ev.items.length > 0;
    $("events-more").hidden = !ev.older;
  }

  async function readAll(url, after, limit) {
    const out = [];
    let cursor = after;
    for (;;) {
      const page = await api("GET", `${url}${url.includes("?") ? "&" : "?"}after=${cursor}&limit=${limit}`);
      out.push(...page.items);
      if (!page.next_cursor || !page.items.length) return out;
      cursor = Number(page.next_cursor);
    }
  }

  // reset: the newest window of the chosen scope; otherwise what is newer than shown.
  async function loadEvents(reset) {
    const ev = state.events;
    if (ev.loading) {
      ev.pending = ev.pending === "reset" || reset ? "reset" : "newer";
      return;
    }
    ev.loading = true;
    const scope = $("events-scope").value;
    try {
      if (reset || scope !== ev.scope) {
        ev.scope = scope;
        if (scope) {
          // The policy's log pages forward from the start; it is read whole (bounded per run).
          const all = await readAll(policyEventsUrl(scope), 0, 500);
          ev.items = all.reverse();
          ev.older = null;
        } else {
          const top = (await viewsPosition()).events;
          const after = Math.max(0, top - EVENTS_WINDOW);
          const items = await readAll(`${API}/events`, after, 500);
          ev.items = items.reverse();
          ev.older = after > 0 ? after : null;
        }
        ev.newest = ev.items.length ? ev.items[0].position : 0;
        renderEvents(true);
      } else {
        const url = scope ? policyEventsUrl(scope) : `${API}/events`;
        const items = await readAll(url, ev.newest, 500);
        if (items.length && ev.scope === scope) {
          ev.items = [...items.reverse(), ...ev.items];
          ev.newest = ev.items[0].position;
          renderEvents(false);
        }
      }
      showAlert("events-alert", "");
    } catch (err) {
      showAlert("events-alert", `Could not read the Event Log: ${errorText(err)}`);
    } finally {
      ev.loading = false;
      if (ev.pending) {
        const again = ev.pending === "reset";
        ev.pending = false;
        loadEvents(again);
      }
    }
  }

  async function loadOlderEvents() {
    const ev = state.events;
    if (!ev.older || ev.scope) return;
    const upto = ev.older;
    const after = Math.max(0, upto - EVENTS_WINDOW);
    try {
      const page = await api("GET", `${API}/events?after=${after}&limit=${upto - after}`);
      const older = page.items.filter((e) => e.position <= upto).reverse();
      ev.items = [...ev.items, ...older];
      ev.older = after > 0 ? after : null;
      const list = $("events-list");
      for (const e of older) {
        const li = eventItem(e);
        li.hidden = $("events-hide-progress").checked && /Progressed$/.test(e.type);
        list.append(li);
      }
      $("events-more").hidden = !ev.older;
    } catch (err) {
      showAlert("events-alert", `Could not read older events: ${errorText(err)}`);
    }
  }

  let eventsTimer = null;
  function eventsChanged() {
    if (eventsTimer) return;
    eventsTimer = window.setTimeout(() => {
      eventsTimer = null;
      if (!state.authBlocked) loadEvents(false);
    }, 400);
  }

  // ------------------------------------------------------------------ start
  async function start() {
    $("forget-token").hidden = !token();
    setLive("connecting", "Connecting…");
    try {
      const position = await refreshAll();
      state.authBlocked = false;
      document.body.classList.remove("auth-blocked");
      $("token-panel").hidden = true;
      startLive(position);
    } catch (err) {
      if (err.status === 401) return; // the token panel is showing
      setLive("offline", "Offline");
      startPolling();
    }
  }

  async function update(event) {
    const btn = event.currentTarget;
    btn.setAttribute("aria-busy", "true");
    try {
      const position = await refreshAll();
      if (!state.live && !state.authBlocked) startLive(position);
      announce("Updated.");
    } catch {
      // shown in the page alert or the token panel
    } finally {
      btn.removeAttribute("aria-busy");
    }
  }

  function init() {
    $("local-zone").textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    if (typeof Intl.supportedValuesOf === "function") {
      $("zone-names").replaceChildren(
        ...["UTC", ...Intl.supportedValuesOf("timeZone")].map((z) => el("option", { value: z })),
      );
    }
    for (const dialog of document.querySelectorAll("dialog")) wireDialog(dialog);
    $("update").addEventListener("click", update);
    $("forget-token").addEventListener("click", forgetToken);
    $("token-form").addEventListener("submit", useToken);
    $("create-policy").addEventListener("click", (e) => openPolicyDialog(null, e.currentTarget));
    $("policy-form").addEventListener("submit", submitPolicy);
    $("delete-form").addEventListener("submit", submitDelete);
    $("confirm-form").addEventListener("submit", submitConfirm);
    $("restore-form").addEventListener("submit", submitRestore);
    $("task-log-close").addEventListener("click", closeTaskLog);
    $("events-scope").addEventListener("change", () => loadEvents(true));
    $("events-hide-progress").addEventListener("change", () => renderEvents(false));
    $("events-more").addEventListener("click", loadOlderEvents);
    $("show-deleted").addEventListener("change", (e) => {
      state.showDeleted = e.currentTarget.checked;
      render();
    });
    for (const kind of ["policies", "backups", "restores"]) {
      $(`${kind}-more`).addEventListener("click", async (e) => {
        try {
          await loadList(kind, true);
          render();
        } catch (err) {
          showAlert(`${kind}-alert`, errorText(err));
        }
        e.currentTarget.focus();
      });
    }
    start();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
