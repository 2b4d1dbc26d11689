// @ts-check
// snapledger web console: plain JavaScript modules against the JSON API under /api/v1, with
// no build step. This module wires the page: its buttons and forms, and the requests the
// other modules announce on the bus.
import { ApiError, errorText, token, viewsPosition } from "./api.js";
import { askForToken, forgetToken, useToken } from "./auth.js";
import { on } from "./bus.js";
import { submitConfirm, wireDialog } from "./dialogs.js";
import { $, announce, el, showAlert } from "./dom.js";
import { loadEvents, loadOlderEvents, renderEvents } from "./eventlog.js";
import { openPolicyDialog, submitDelete, submitPolicy, submitRestore } from "./forms.js";
import { setLive, startLive, startPolling } from "./live.js";
import { loadList, refreshLists } from "./records.js";
import { state } from "./state.js";
import { render, scheduleRender } from "./tables.js";
import { closeTaskLog, loadTaskLog } from "./tasklog.js";


// Update: every list, the Event Log and an open task log. Returns the views position
// read before the lists, so the stream can resume from there without a gap.
async function refreshAll() {
  showAlert("page-alert", "");
  const pos = await viewsPosition();
  try {
    await refreshLists();
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) showAlert("page-alert", `Could not load the records: ${errorText(err)}`);
    throw err;
  }
  await Promise.all([loadEvents(true), state.taskLog ? loadTaskLog(false) : null]);
  return pos.views;
}


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
    if (err instanceof ApiError && err.status === 401) return; // the token panel is showing
    setLive("offline", "Offline");
    startPolling();
  }
}


/**
 * @param {MouseEvent} event
 */
async function update(event) {
  const btn = /** @type {HTMLElement} */ (event.currentTarget);
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
  $("create-policy").addEventListener("click", (/** @type {MouseEvent} */ e) =>
    openPolicyDialog(null, /** @type {HTMLElement} */ (e.currentTarget)),
  );
  $("policy-form").addEventListener("submit", submitPolicy);
  $("delete-form").addEventListener("submit", submitDelete);
  $("confirm-form").addEventListener("submit", submitConfirm);
  $("restore-form").addEventListener("submit", submitRestore);
  $("task-log-close").addEventListener("click", closeTaskLog);
  $("events-scope").addEventListener("change", () => loadEvents(true));
  $("events-hide-progress").addEventListener("change", () => renderEvents(false));
  $("events-more").addEventListener("click", loadOlderEvents);
  $("show-deleted").addEventListener("change", (/** @type {Event} */ e) => {
    state.showDeleted = /** @type {HTMLInputElement} */ (e.currentTarget).checked;
    render();
  });
  /** @type {import('./state.js').Kind[]} */
  const kinds = ["policies", "backups", "restores"];
  for (const kind of kinds) {
    $(`${kind}-more`).addEventListener("click", async (/** @type {MouseEvent} */ e) => {
      // Taken now: once the handler awaits, the event's currentTarget is null.
      const more = /** @type {HTMLElement} */ (e.currentTarget);
      try {
        await loadList(kind, true);
        render();
      } catch (err) {
        showAlert(`${kind}-alert`, errorText(err));
      }
      more.focus();
    });
  }
  on("unauthorized", askForToken);
  on("render", scheduleRender);
  on("restart", () => start());
  start();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
