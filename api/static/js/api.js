// @ts-check
// Talking to the JSON API: bearer tokens, the actor header, Idempotency-Key on every
// mutation with retries under the same key, and errors as the API words them.
import { emit } from "./bus.js";

export const API = "/api/v1";

export const TOKEN_KEY = "snapledger.token";


export class ApiError extends Error {
  /**
   * @param {number} status 0: the API could not be reached
   * @param {string} message
   * @param {string | null | undefined} field the request field the error names
   */
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}


export const token = () => sessionStorage.getItem(TOKEN_KEY) || "";


/**
 * @param {string} method
 * @returns {Record<string, string>}
 */
export function authHeaders(method) {
  /** @type {Record<string, string>} */
  const headers = {};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  else if (method !== "GET") headers["X-Snapledger-Actor"] = "console";
  return headers;
}


function requestKey() {
  if (crypto.randomUUID) return `console-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}


// A mutation is sent under an Idempotency-Key and, when the API answers 503 or cannot be
// reached, sent again under the same key: the server acts once and answers the first outcome.
const RETRIES = 6;

/**
 * @param {number} ms
 * @returns {Promise<void>}
 */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));


/**
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<any>} the API's JSON answer
 */
export async function api(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json", ...authHeaders(method) };
  if (method !== "GET") headers["Idempotency-Key"] = requestKey();
  /** @type {RequestInit} */
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  for (let attempt = 1; ; attempt++) {
    const last = method === "GET" || attempt >= RETRIES;
    try {
      res = await fetch(path, init);
    } catch (err) {
      if (last) throw new ApiError(0, `cannot reach the API: ${err instanceof Error ? err.message : err}`, null);
      await sleep(1000);
      continue;
    }
    if (res.status !== 503 || last) break;
    const after = Number(res.headers.get("Retry-After"));
    await sleep(Math.min(Number.isFinite(after) && after > 0 ? after : 2, 5) * 1000);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  const message = data && typeof data.error === "string" ? data.error : `HTTP ${res.status} ${res.statusText}`;
  if (res.status === 401) {
    emit("unauthorized", message);
    throw new ApiError(401, message, "Authorization");
  }
  if (!res.ok) throw new ApiError(res.status, message, data ? data.field : null);
  return data;
}


/**
 * @param {unknown} err
 */
export function errorText(err) {
  if (!(err instanceof ApiError)) return String(err instanceof Error ? err.message : err);
  const status = err.status ? `${err.status}: ` : "";
  const names = err.field && !err.message.includes(err.field) ? ` (field: ${err.field})` : "";
  return `${status}${err.message}${names}`;
}


// Where the event store and the views stand, from /readyz (it answers them when lagging too).
/**
 * @returns {Promise<{views: number, events: number}>}
 */
export async function viewsPosition() {
  try {
    const res = await fetch("/readyz", { headers: authHeaders("GET"), cache: "no-store" });
    const ready = await res.json();
    return { views: Number(ready.views_position) || 0, events: Number(ready.position) || 0 };
  } catch {
    return { views: 0, events: 0 };
  }
}


/**
 * @param {string} id
 */
export const policyUrl = (id) => `${API}/policies/${encodeURIComponent(id)}`;

// The Event Log of a policy, its snapshots and restores: also once the policy is deleted.
/**
 * @param {string} id
 */
export const policyEventsUrl = (id) => `${API}/events?policy_id=${encodeURIComponent(id)}`;
