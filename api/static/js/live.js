// @ts-check
// Live updates: the record views arrive over GET /api/v1/stream (Server-Sent Events whose
// data is the changed record row). Without a token the browser's EventSource reads it (it
// reconnects by itself, resuming with Last-Event-ID). EventSource cannot send an
// Authorization header, so with a token the same stream is read with fetch(), which can; it
// reconnects itself with Last-Event-ID. While the stream is down the console polls the
// lists every few seconds.
import { API, api, authHeaders, token, viewsPosition } from "./api.js";
import { emit } from "./bus.js";
import { $ } from "./dom.js";
import { eventsChanged } from "./eventlog.js";
import { refreshLists } from "./records.js";
import { state } from "./state.js";
import { taskLogChanged } from "./tasklog.js";

const POLL_MS = 3000;


/**
 * @param {string} mode
 * @param {string} text
 */
export function setLive(mode, text) {
  state.liveState = mode;
  const node = $("live-status");
  node.dataset.state = mode;
  node.textContent = text;
}


export function startPolling() {
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


export function stopPolling() {
  if (state.pollTimer) window.clearInterval(state.pollTimer);
  state.pollTimer = null;
}


export function stopLive() {
  if (state.live) state.live.close();
  state.live = null;
}


/**
 * @param {number} [after]
 */
export function startLive(after) {
  stopLive();
  if (state.authBlocked) return;
  state.position = Math.max(state.position, after || 0);
  if (token()) streamWithFetch();
  else streamWithEventSource();
}


/**
 * @param {string} kind
 * @param {string} data
 * @param {string | null} id
 */
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
  /** @type {Record<string, import('./state.js').Kind>} */
  const kinds = { policy: "policies", backup: "backups", restore: "restores" };
  const name = kinds[kind];
  if (!name || !row || !row.id) return;
  state.seq += 1;
  state.touched[name].set(row.id, state.seq);
  state[name].set(row.id, row);
  emit("render");
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
          emit("unauthorized", "the stream refused the token");
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
            /** @type {{event: string, data: string[], id: string | null}} */
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
