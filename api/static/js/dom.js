// @ts-check
// Building and reading the page: elements, times, sizes and durations as the tables show
// them, the live region and alerts, and where focus goes back to after a dialog.

/** @typedef {{node: HTMLElement, rowId: string | null, key: string | null}} Opener */


/**
 * @param {string} id
 * @returns {any} the element (every id the modules ask for is in index.html)
 */
export const $ = (id) => document.getElementById(id);


/**
 * @param {string} tag
 * @param {Record<string, any> | null} attrs
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function el(tag, attrs, ...children) {
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


/**
 * @param {number} n
 */
const pad = (n) => String(n).padStart(2, "0");


/**
 * @param {string | null | undefined} iso
 * @param {string} [empty]
 * @returns {Node}
 */
export function timeNode(iso, empty = "—") {
  if (!iso) return document.createTextNode(empty);
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return document.createTextNode(iso);
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const title = `${d.toISOString()} (UTC)`;
  return el("time", { datetime: iso, title }, el("span", {}, day), " ", el("span", {}, clock));
}


/**
 * @param {number | null | undefined} n
 */
export function bytes(n) {
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


/**
 * @param {number | null | undefined} seconds
 */
export function elapsed(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Number(seconds);
  if (s < 60) return `${s.toFixed(1)} s`;
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  return h ? `${h} h ${pad(m)} min` : `${m} min ${pad(rest)} s`;
}


/**
 * @param {number | null | undefined} seconds
 */
export function duration(seconds) {
  if (!seconds) return "";
  /** @type {[string, number][]} */
  const units = [["w", 604800], ["d", 86400], ["h", 3600], ["m", 60]];
  for (const [unit, size] of units) {
    if (seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}


/**
 * @param {number | null | undefined} n
 */
export const count = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString());

/**
 * @param {string} status
 */
export const badge = (status) => el("span", { class: "badge", "data-status": status }, status);


/**
 * @param {import('./state.js').RunRow} row
 * @param {string} label
 */
export function progressNode(row, label) {
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


/**
 * @param {{created_at: string, id: string}} a
 * @param {{created_at: string, id: string}} b
 */
export const byNewest = (a, b) =>
  a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : a.id < b.id ? 1 : a.id > b.id ? -1 : 0;


/**
 * @param {string} text
 */
export function announce(text) {
  const node = $("announce");
  node.textContent = "";
  window.setTimeout(() => {
    node.textContent = text;
  }, 30);
}


/**
 * @param {string} id
 * @param {string} [text]
 */
export function showAlert(id, text) {
  $(id).textContent = text || "";
}


// Where focus goes back to: the opener, or its successor if live updates re-rendered its row.
/**
 * @param {HTMLElement | null} node
 * @returns {Opener | null}
 */
export function openerOf(node) {
  if (!node) return null;
  const tr = node.closest("tr");
  return { node, rowId: tr ? tr.dataset.id || null : null, key: node.dataset.focusKey || null };
}


/**
 * @param {Opener | null | undefined} opener
 */
export function returnFocus(opener) {
  if (!opener) return;
  if (opener.node.isConnected) {
    opener.node.focus();
    return;
  }
  if (!opener.rowId || !opener.key) return;
  const row = document.querySelector(`tr[data-id="${opener.rowId}"]`);
  const again = row && row.querySelector(`[data-focus-key="${opener.key}"]`);
  if (again instanceof HTMLElement) again.focus();
}
