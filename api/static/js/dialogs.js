// @ts-check
// Dialogs: opening one modal at a time, focus back to what opened it, errors beside the
// field the API names, and the confirmation every destructive action asks for.
import { errorText } from "./api.js";
import { $, announce, openerOf, returnFocus, showAlert } from "./dom.js";
import { afterMutation } from "./records.js";


/** @type {WeakMap<HTMLDialogElement, import('./dom.js').Opener | null>} where focus returns on close */
const openers = new WeakMap();

/**
 * @param {HTMLDialogElement} dialog
 */
export function wireDialog(dialog) {
  for (const closer of dialog.querySelectorAll("[data-close]")) {
    closer.addEventListener("click", () => dialog.close());
  }
  dialog.addEventListener("close", () => {
    const opener = openers.get(dialog);
    openers.delete(dialog);
    returnFocus(opener);
  });
}


/**
 * @param {HTMLDialogElement} dialog
 * @param {HTMLElement | null} opener
 */
export function openDialog(dialog, opener) {
  openers.set(dialog, openerOf(opener));
  dialog.showModal();
}


/**
 * @param {HTMLElement} form
 * @param {string} alertId
 */
export function clearFieldErrors(form, alertId) {
  showAlert(alertId, "");
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
}


// The API's {error, field}: the message goes beside the field it names, and on top.
/**
 * @param {string} prefix
 * @param {string} alertId
 * @param {any} err an ApiError, or what fetch threw
 * @param {Record<string, string>} fieldMap
 */
export function showFieldError(prefix, alertId, err, fieldMap) {
  const field = err.field ? (fieldMap[err.field] || err.field) : null;
  const input = field ? $(`${prefix}-${field}`) : null;
  showAlert(alertId, errorText(err));
  if (input) {
    input.setAttribute("aria-invalid", "true");
    $(`${prefix}-${field}-error`).textContent = err.message;
    input.focus();
  }
}


/** @type {{fn: () => Promise<unknown>, done: string, alertId: string} | null} */
let confirming = null;

/**
 * @param {string} title
 * @param {string} text
 * @param {string} label
 * @param {HTMLElement} opener
 * @param {() => Promise<unknown>} fn
 * @param {string} done
 * @param {string} alertId
 */
export function confirmDialog(title, text, label, opener, fn, done, alertId) {
  confirming = { fn, done, alertId };
  showAlert("confirm-form-alert", "");
  $("confirm-dialog-h").textContent = title;
  $("confirm-dialog-text").textContent = text;
  $("confirm-submit").textContent = label;
  openDialog($("confirm-dialog"), opener);
}


/**
 * @param {SubmitEvent} event
 */
export async function submitConfirm(event) {
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
