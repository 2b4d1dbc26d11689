// @ts-check
// What the buttons do: Take a Snapshot, Stop, Rebuild, Delete, the Event Log of a policy,
// and downloads. Each mutation's error lands in its section's alert.
import { API, ApiError, api, authHeaders, errorText, policyUrl, token } from "./api.js";
import { emit } from "./bus.js";
import { confirmDialog } from "./dialogs.js";
import { $, announce, el, showAlert } from "./dom.js";
import { loadEvents } from "./eventlog.js";
import { afterMutation } from "./records.js";


// Runs one mutation from a button; errors land in the section's alert.
/**
 * @param {HTMLElement | null} button
 * @param {string} alertId
 * @param {() => Promise<unknown>} fn
 * @param {string} [done]
 */
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


/**
 * @param {HTMLElement} btn
 * @param {import('./state.js').Policy} p
 */
export function takeSnapshot(btn, p) {
  return act(
    btn,
    "policies-alert",
    () => api("POST", `${policyUrl(p.id)}/snapshots`),
    `Snapshot of ${p.name} requested.`,
  );
}


/**
 * @param {HTMLElement} btn
 * @param {import('./state.js').Policy} p
 */
export function stopPolicy(btn, p) {
  return act(btn, "policies-alert", () => api("POST", `${policyUrl(p.id)}/stop`), `Policy ${p.name} stopped.`);
}


/**
 * @param {HTMLElement} btn
 * @param {import('./state.js').Policy} p
 */
export function rebuildPolicy(btn, p) {
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


/**
 * @param {import('./state.js').Policy} p
 */
export function showPolicyEvents(p) {
  $("events-scope").value = p.id;
  loadEvents(true);
  $("events").scrollIntoView({ block: "start" });
  $("events-h").focus({ preventScroll: true });
}


/**
 * @param {HTMLElement} btn
 * @param {import('./state.js').Backup} b
 */
export function stopBackup(btn, b) {
  const stop = () => api("POST", `${API}/backups/${b.id}/stop`);
  return act(btn, "backups-alert", stop, `Stop of ${b.sub_name} requested.`);
}


/**
 * @param {HTMLElement} btn
 * @param {import('./state.js').Backup} b
 */
export function deleteBackup(btn, b) {
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


/**
 * @param {HTMLElement} btn
 * @param {import('./state.js').Restore} r
 */
export function stopRestore(btn, r) {
  const stop = () => api("POST", `${API}/restores/${r.id}/stop`);
  return act(btn, "restores-alert", stop, `Stop of ${r.sub_name} requested.`);
}


// Without a token the link downloads natively (streamed to disk). A token must go in a
// header, which a link cannot send, so the archive is fetched and handed over as a blob.
/**
 * @param {MouseEvent} event
 * @param {import('./state.js').Backup} b
 */
export async function downloadWithToken(event, b) {
  if (!token() || !b.download_url) return;
  event.preventDefault();
  try {
    const res = await fetch(b.download_url, { headers: authHeaders("GET") });
    if (res.status === 401) {
      emit("unauthorized", "a valid bearer token is required");
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
