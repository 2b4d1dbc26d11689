// @ts-check
// The three forms: a policy (create or Edit, sending only what changed), Delete of a policy
// (with or without its archive files), and Restore of a snapshot.
import { API, api, errorText, policyUrl } from "./api.js";
import { clearFieldErrors, openDialog, showFieldError } from "./dialogs.js";
import { $, announce, count, duration, showAlert } from "./dom.js";
import { afterMutation } from "./records.js";


const POLICY_FIELDS = ["name", "source", "storage", "schedule", "timezone", "keep_last", "expire_after"];

const FIELD_OF = {
  "retention.keep_last": "keep_last",
  "retention.expire_after": "expire_after",
  retention: "keep_last",
};

/** @type {{policy: import('./state.js').Policy, initial: Record<string, string>} | null} */
let editing = null;


/**
 * @param {import('./state.js').Policy | null} policy
 * @param {HTMLElement} opener
 */
export function openPolicyDialog(policy, opener) {
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
  for (const f of POLICY_FIELDS) $(`pf-${f}`).value = values[/** @type {keyof typeof values} */ (f)];
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


/**
 * @returns {Record<string, string>}
 */
function formValues() {
  /** @type {Record<string, string>} */
  const out = {};
  for (const f of POLICY_FIELDS) out[f] = $(`pf-${f}`).value.trim();
  // The unit comes from its list: a bare number is never sent (the API refuses one).
  if (out.expire_after) out.expire_after = `${out.expire_after}${$("pf-expire_after_unit").value}`;
  return out;
}


/**
 * @param {Record<string, string>} v
 */
function retentionOf(v) {
  if (!v.keep_last && !v.expire_after) return null;
  /** @type {{keep_last?: number | string, expire_after?: string}} */
  const retention = {};
  // Anything not a plain number goes to the API as typed, so its message names the field.
  if (v.keep_last) retention.keep_last = /^\d+$/.test(v.keep_last) ? Number(v.keep_last) : v.keep_last;
  if (v.expire_after) retention.expire_after = v.expire_after;
  return retention;
}


/**
 * @param {SubmitEvent} event
 */
export async function submitPolicy(event) {
  event.preventDefault();
  const form = $("policy-form");
  clearFieldErrors(form, "policy-form-alert");
  const v = formValues();
  /** @type {Record<string, unknown>} */
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


/** @type {import('./state.js').Policy | null} */
let deleting = null;

/**
 * @param {import('./state.js').Policy} policy
 * @param {HTMLElement} opener
 */
export function openDeleteDialog(policy, opener) {
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


/**
 * @param {SubmitEvent} event
 */
export async function submitDelete(event) {
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


/** @type {import('./state.js').Backup | null} */
let restoring = null;

/**
 * @param {import('./state.js').Backup} b
 * @param {HTMLElement} opener
 */
export function openRestoreDialog(b, opener) {
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


/**
 * @param {SubmitEvent} event
 */
export async function submitRestore(event) {
  event.preventDefault();
  if (!restoring) return;
  const b = restoring;
  clearFieldErrors($("restore-form"), "restore-form-alert");
  /** @type {{snapshot_id: string, target: string, dry_run?: boolean, trust_unverified?: boolean}} */
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
