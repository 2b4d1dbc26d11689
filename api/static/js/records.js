// @ts-check
// Reading the record views page by page, without letting an older read overwrite a row the
// stream delivered meanwhile.
import { API, api } from "./api.js";
import { emit } from "./bus.js";
import { eventsChanged } from "./eventlog.js";
import { state } from "./state.js";

const PAGE = 100;


/**
 * @param {import('./state.js').Kind} kind
 * @param {boolean} [more]
 */
export async function loadList(kind, more) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (more && state.cursors[kind]) params.set("cursor", state.cursors[kind]);
  const start = state.seq;
  const page = await api("GET", `${API}/${kind}?${params}`);
  /** @param {string} id */
  const fresher = (id) => (state.touched[kind].get(id) || 0) > start;
  if (!more) for (const id of [...state[kind].keys()]) if (!fresher(id)) state[kind].delete(id);
  /** @type {Map<string, {id: string}>} */
  const rows = state[kind];
  for (const row of page.items) if (!fresher(row.id)) rows.set(row.id, row);
  state.cursors[kind] = page.next_cursor;
}


export async function refreshLists() {
  await Promise.all([loadList("policies"), loadList("backups"), loadList("restores")]);
  emit("render");
}


// The stream brings the change; without it, read the lists again.
export function afterMutation() {
  if (state.liveState !== "live") refreshLists().catch(() => {});
  eventsChanged();
}
