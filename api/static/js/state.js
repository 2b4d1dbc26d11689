// @ts-check
// What the console knows: the record views as the API answers them, by id, and where the
// live stream, the Event Log and the open task log stand. One object, read and changed by
// the modules that own each part; the types below are the API's rows as the console uses them.

/**
 * @typedef {object} Policy
 * @property {string} id
 * @property {string} name
 * @property {string} status
 * @property {string} source
 * @property {string} storage
 * @property {string | null} schedule
 * @property {string | null} timezone
 * @property {string | null} next_run_at
 * @property {string | null} last_success_at
 * @property {string | null} last_failure_at
 * @property {string | null} last_failure_reason
 * @property {{ keep_last?: number | null, expire_after_seconds?: number | null } | null} retention
 * @property {number} [snapshots_count]
 * @property {string} created_at
 */

/**
 * What Backup Records and Restore Records share.
 * @typedef {object} RunRow
 * @property {string} id
 * @property {string} sub_name
 * @property {string} status
 * @property {string | null} task_name
 * @property {string} log_url
 * @property {number | null} elapsed_seconds
 * @property {number | null} items
 * @property {number | null} progress
 * @property {string} created_at
 * @property {boolean} [stop_requested]
 * @property {string | null} [error]
 * @property {number | null} [bytes_per_second]
 * @property {number | null} [eta_seconds]
 */

/**
 * @typedef {RunRow & {
 *   policy_id: string, file_name: string, download_url: string | null, storage: string,
 *   expires_at: string | null, transferred_bytes: number | null, verification?: string | null,
 * }} Backup
 */

/**
 * @typedef {RunRow & {
 *   snapshot_id: string, target: string, dry_run: boolean,
 *   consistency: Record<string, { ok: boolean }> | null,
 * }} Restore
 */

/**
 * @typedef {object} EventEntry
 * @property {number} position
 * @property {string} time
 * @property {string} type
 * @property {string} message
 * @property {string | null} actor
 */

/** @typedef {"policies" | "backups" | "restores"} Kind */

/**
 * @typedef {object} TaskLog
 * @property {"backup" | "restore"} kind
 * @property {string} id
 * @property {string} url
 * @property {string | null} name
 * @property {number} after
 * @property {import("./dom.js").Opener | null} opener
 */

export const state = {
  /** @type {Map<string, Policy>} */
  policies: new Map(),
  /** @type {Map<string, Backup>} */
  backups: new Map(),
  /** @type {Map<string, Restore>} */
  restores: new Map(),
  /** @type {Record<Kind, string | null>} */
  cursors: { policies: null, backups: null, restores: null },
  showDeleted: false,
  // Rows the stream delivered, by order of arrival: a list read that was already under way
  // must not overwrite them with older data (the stream brings every later change anyway).
  seq: 0,
  /** @type {Record<Kind, Map<string, number>>} */
  touched: { policies: new Map(), backups: new Map(), restores: new Map() },
  position: 0, // last stream position seen (SSE id)
  /** @type {{ close(): void } | null} the running stream reader */
  live: null,
  liveState: "connecting",
  /** @type {number | null} */
  pollTimer: null,
  authBlocked: false,
  // The Event Log panel; pending: "reset" | "newer" asked for while a load was running.
  events: {
    scope: "",
    /** @type {EventEntry[]} */
    items: [],
    /** @type {number | null} */
    older: null,
    newest: 0,
    loading: false,
    /** @type {false | "reset" | "newer"} */
    pending: false,
  },
  /** @type {TaskLog | null} */
  taskLog: null,
};
