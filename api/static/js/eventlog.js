// @ts-check
// The Event Log: the stream itself, read back newest first, globally or for one policy's
// cycle, with older pages on demand.
import { API, api, errorText, policyEventsUrl, viewsPosition } from "./api.js";
import { $, el, showAlert, timeNode } from "./dom.js";
import { state } from "./state.js";

const EVENTS_WINDOW = 150;


/**
 * @param {import('./state.js').EventEntry} e
 */
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


/**
 * @param {boolean} reset
 */
export function renderEvents(reset) {
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


/**
 * @param {string} url
 * @param {number} after
 * @param {number} limit
 * @returns {Promise<import('./state.js').EventEntry[]>}
 */
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
/**
 * @param {boolean} reset
 * @returns {Promise<void>}
 */
export async function loadEvents(reset) {
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


export async function loadOlderEvents() {
  const ev = state.events;
  if (!ev.older || ev.scope) return;
  const upto = ev.older;
  const after = Math.max(0, upto - EVENTS_WINDOW);
  try {
    const page = await api("GET", `${API}/events?after=${after}&limit=${upto - after}`);
    /** @type {import('./state.js').EventEntry[]} */
    const items = page.items;
    const older = items.filter((e) => e.position <= upto).reverse();
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


/** @type {number | null} */
let eventsTimer = null;

export function eventsChanged() {
  if (eventsTimer) return;
  eventsTimer = window.setTimeout(() => {
    eventsTimer = null;
    if (!state.authBlocked) loadEvents(false);
  }, 400);
}
