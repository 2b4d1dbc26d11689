// @ts-check
// Tokens: when the API answers 401 the console asks for a bearer token and keeps it in
// sessionStorage only (this tab, until it closes). Without a token, mutations name the
// actor with X-Snapledger-Actor: console.
import { TOKEN_KEY, token } from "./api.js";
import { $, showAlert } from "./dom.js";
import { setLive, stopLive, stopPolling } from "./live.js";
import { emit } from "./bus.js";
import { state } from "./state.js";


/**
 * @param {string} reason
 */
export function askForToken(reason) {
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


/**
 * @param {SubmitEvent} event
 */
export async function useToken(event) {
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
  emit("restart");
}


export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("forget-token").hidden = true;
  stopLive();
  emit("restart");
}
