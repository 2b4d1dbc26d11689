// @ts-check
// The task log panel: one run's events (the DDT task's log), kept current while it is open.
import { api, errorText } from "./api.js";
import { $, el, openerOf, returnFocus, showAlert, timeNode } from "./dom.js";
import { state } from "./state.js";


/**
 * @param {"backup" | "restore"} kind
 * @param {import('./state.js').RunRow} row
 * @param {HTMLElement} opener
 */
export function openTaskLog(kind, row, opener) {
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


export function closeTaskLog() {
  const opener = state.taskLog && state.taskLog.opener;
  state.taskLog = null;
  $("task-log").hidden = true;
  returnFocus(opener);
}


/** @type {number | null} */
let taskLogTimer = null;

export function taskLogChanged() {
  if (taskLogTimer) return;
  taskLogTimer = window.setTimeout(() => {
    taskLogTimer = null;
    if (state.taskLog) loadTaskLog(true);
  }, 400);
}


/**
 * @param {boolean} newerOnly
 */
export async function loadTaskLog(newerOnly) {
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
