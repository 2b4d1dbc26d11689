// @ts-check
// The three tables (Policies, Backup Records, Restore Records), drawn from the state by a
// keyed update that rebuilds only the rows that changed and keeps the focused button.
import { deleteBackup, downloadWithToken, rebuildPolicy, showPolicyEvents, stopBackup, stopPolicy, stopRestore, takeSnapshot } from "./actions.js";
import { $, badge, byNewest, bytes, count, duration, el, elapsed, progressNode, timeNode } from "./dom.js";
import { openDeleteDialog, openPolicyDialog, openRestoreDialog } from "./forms.js";
import { state } from "./state.js";
import { openTaskLog } from "./tasklog.js";


let renderQueued = false;

export function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  window.setTimeout(() => {
    renderQueued = false;
    render();
  }, 30);
}


/**
 * @template {{status: string, created_at: string, id: string}} T
 * @param {Map<string, T>} map
 * @returns {T[]}
 */
function visible(map) {
  const rows = [...map.values()].filter((r) => state.showDeleted || r.status !== "deleted");
  return rows.sort(byNewest);
}


// Keyed update: a row is rebuilt only when its signature changed, and the focused button
// keeps focus, so keyboard users are not thrown out by live updates.
/**
 * @template {{id: string, status: string}} T
 * @param {HTMLTableSectionElement} tbody
 * @param {T[]} rows
 * @param {(row: T) => string} signature
 * @param {(row: T) => Node[]} build
 */
function syncTable(tbody, rows, signature, build) {
  /** @type {Map<string | undefined, HTMLTableRowElement>} */
  const existing = new Map([...tbody.rows].map((tr) => [tr.dataset.id, tr]));
  /** @type {HTMLTableRowElement | null} */
  let previous = null;
  for (const row of rows) {
    let tr = existing.get(row.id);
    existing.delete(row.id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.id = row.id;
    }
    const sig = signature(row);
    if (tr.dataset.sig !== sig) {
      const active = document.activeElement;
      const key = active instanceof HTMLElement && tr.contains(active) ? active.dataset.focusKey : null;
      tr.replaceChildren(...build(row));
      tr.className = row.status === "deleted" ? "is-deleted" : "";
      tr.dataset.sig = sig;
      if (key) {
        const again = tr.querySelector(`[data-focus-key="${key}"]`);
        if (again instanceof HTMLElement) again.focus();
      }
    }
    /** @type {ChildNode | null} */
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (wanted !== tr) tbody.insertBefore(tr, wanted);
    previous = tr;
  }
  for (const tr of existing.values()) tr.remove();
  return rows.length;
}


/**
 * @param {string} text
 * @param {string} label
 * @param {string} key
 * @param {(e: MouseEvent & {currentTarget: HTMLElement}) => void} onclick
 * @param {string} [cls]
 */
function button(text, label, key, onclick, cls) {
  return el("button", { type: "button", class: cls, "aria-label": label, "data-focus-key": key, onclick }, text);
}


/**
 * @param {string} policyId
 */
function runningOf(policyId) {
  return [...state.backups.values()].filter(
    (b) => b.policy_id === policyId && (b.status === "running" || b.status === "requested"),
  );
}


/**
 * @param {import('./state.js').Policy} p
 */
function policyCells(p) {
  const running = runningOf(p.id);
  const state_ = el(
    "td",
    {},
    badge(p.status),
    running.map((b) =>
      el(
        "span",
        { class: "sub" },
        `${b.sub_name} ${b.status}${b.status === "running" ? ` ${Math.floor(b.progress || 0)} %` : ""}`,
      ),
    ),
  );
  const retention = [];
  if (p.retention && p.retention.keep_last) retention.push(`keep last ${p.retention.keep_last}`);
  if (p.retention && p.retention.expire_after_seconds) {
    retention.push(`expire after ${duration(p.retention.expire_after_seconds)}`);
  }
  const actions = el("div", { class: "actions" });
  if (p.status !== "deleted") {
    actions.append(
      button("Take a Snapshot", `Take a Snapshot of ${p.name}`, "snapshot", (e) => takeSnapshot(e.currentTarget, p)),
    );
    if (p.status === "active") {
      actions.append(button("Stop", `Stop ${p.name}`, "stop", (e) => stopPolicy(e.currentTarget, p)));
    }
    actions.append(
      button("Rebuild", `Rebuild ${p.name}`, "rebuild", (e) => rebuildPolicy(e.currentTarget, p)),
      button("Edit", `Edit ${p.name}`, "edit", (e) => openPolicyDialog(p, e.currentTarget)),
      button("Delete", `Delete ${p.name}`, "delete", (e) => openDeleteDialog(p, e.currentTarget)),
    );
  }
  actions.append(button("Event Log", `Event Log of ${p.name}`, "events", () => showPolicyEvents(p)));
  return [
    el("th", { scope: "row" }, p.name),
    state_,
    el("td", {}, `${p.source} → ${p.storage}`),
    el(
      "td",
      {},
      p.schedule ? el("code", {}, p.schedule) : "manual only",
      p.schedule ? el("span", { class: "sub" }, p.timezone || "UTC") : null,
    ),
    el("td", { class: "time" }, p.status === "active" ? timeNode(p.next_run_at) : "—"),
    el("td", { class: "time" }, timeNode(p.last_success_at)),
    el(
      "td",
      { class: "reason" },
      el("span", { class: "time" }, timeNode(p.last_failure_at)),
      p.last_failure_reason ? el("span", { class: "sub error" }, p.last_failure_reason) : null,
    ),
    el("td", {}, retention.length ? retention.join(", ") : "keep all"),
    el("td", {}, actions),
  ];
}


/**
 * @param {import('./state.js').RunRow} row
 */
function statusCell(row) {
  const stopping = row.stop_requested && (row.status === "running" || row.status === "requested");
  return el(
    "td",
    {},
    badge(row.status),
    stopping ? el("span", { class: "sub" }, "stopping…") : null,
    row.error ? el("span", { class: "sub error" }, row.error) : null,
  );
}


/**
 * @param {import('./state.js').Backup} b
 */
function downloadCell(b) {
  if (!b.download_url) {
    return el("td", { class: "file" }, b.file_name, el("span", { class: "sub" }, "no archive to download"));
  }
  const link = el(
    "a",
    { href: b.download_url, download: b.file_name, "data-focus-key": "download", title: "Download the archive" },
    b.file_name,
  );
  link.addEventListener("click", (e) => downloadWithToken(e, b));
  return el("td", { class: "file" }, link);
}


/**
 * @param {import('./state.js').Backup} b
 */
function backupCells(b) {
  const active = b.status === "running" || b.status === "requested";
  const actions = el("div", { class: "actions" });
  if (active && !b.stop_requested) {
    actions.append(button("Stop", `Stop ${b.sub_name}`, "stop", (e) => stopBackup(e.currentTarget, b)));
  }
  if (b.status === "completed") {
    actions.append(
      button("Restore", `Restore ${b.sub_name}`, "restore", (e) => openRestoreDialog(b, e.currentTarget)),
    );
  }
  if (b.status !== "deleted") {
    actions.append(button("Delete", `Delete ${b.sub_name}`, "delete", (e) => deleteBackup(e.currentTarget, b)));
  }
  return [
    el("th", { scope: "row" }, b.sub_name),
    downloadCell(b),
    el("td", { class: "task" }, taskButton("backup", b)),
    el("td", { class: "num" }, elapsed(b.elapsed_seconds)),
    el("td", { class: "num" }, count(b.items)),
    el("td", {}, progressNode(b, b.sub_name)),
    el("td", { class: "time" }, timeNode(b.created_at)),
    el("td", { class: "time" }, timeNode(b.expires_at, b.status === "completed" ? "never" : "—")),
    el("td", { class: "num" }, bytes(b.transferred_bytes)),
    statusCell(b),
    el("td", {}, actions),
  ];
}


/**
 * @param {"backup" | "restore"} kind
 * @param {import('./state.js').RunRow} row
 */
function taskButton(kind, row) {
  if (!row.task_name) return document.createTextNode("—");
  /** @param {MouseEvent & {currentTarget: HTMLElement}} e */
  const open = (e) => openTaskLog(kind, row, e.currentTarget);
  return button(row.task_name, `Task log ${row.task_name}`, "log", open, "link");
}


/**
 * @param {import('./state.js').Restore} r
 */
function snapshotLabel(r) {
  const snap = state.backups.get(r.snapshot_id);
  return snap ? `${snap.sub_name}` : r.snapshot_id.slice(0, 8);
}


/**
 * @param {import('./state.js').Restore} r
 */
function restoreCells(r) {
  const active = r.status === "running" || r.status === "requested";
  const actions = el("div", { class: "actions" });
  if (active && !r.stop_requested) {
    actions.append(button("Stop", `Stop ${r.sub_name}`, "stop", (e) => stopRestore(e.currentTarget, r)));
  }
  const snap = state.backups.get(r.snapshot_id);
  const checks = r.consistency ? Object.values(r.consistency) : [];
  const verified = checks.length
    ? `${checks.filter((c) => c.ok).length}/${checks.length} collections match`
    : null;
  return [
    el(
      "th",
      { scope: "row" },
      r.sub_name,
      el("span", { class: "sub" }, `target ${r.target}${r.dry_run ? " (dry run)" : ""}`),
    ),
    el("td", { class: "file" }, snapshotLabel(r), snap ? el("span", { class: "sub" }, snap.file_name) : null),
    el("td", { class: "task" }, taskButton("restore", r)),
    el("td", { class: "num" }, elapsed(r.elapsed_seconds)),
    el("td", { class: "num" }, count(r.items)),
    el("td", {}, progressNode(r, r.sub_name)),
    el("td", { class: "time" }, timeNode(r.created_at)),
    el("td", {}, [...statusCell(r).childNodes], verified ? el("span", { class: "sub" }, verified) : null),
    el("td", {}, actions),
  ];
}


export function render() {
  const policies = visible(state.policies);
  const backups = visible(state.backups);
  const restores = visible(state.restores);
  syncTable(
    $("policies-table").tBodies[0],
    policies,
    (p) =>
      JSON.stringify(p) +
      JSON.stringify(runningOf(p.id).map((b) => [b.sub_name, b.status, Math.floor(b.progress || 0)])),
    policyCells,
  );
  syncTable($("backups-table").tBodies[0], backups, (b) => JSON.stringify(b), backupCells);
  syncTable(
    $("restores-table").tBodies[0],
    restores,
    (r) => JSON.stringify(r) + snapshotLabel(r),
    restoreCells,
  );
  $("policies-empty").hidden = policies.length > 0;
  $("backups-empty").hidden = backups.length > 0;
  $("restores-empty").hidden = restores.length > 0;
  /** @type {import('./state.js').Kind[]} */
  const kinds = ["policies", "backups", "restores"];
  for (const kind of kinds) $(`${kind}-more`).hidden = !state.cursors[kind];
  renderScopeOptions();
  renderNameSuggestions();
}


function renderScopeOptions() {
  const select = $("events-scope");
  const wanted = [["", "All events"]];
  for (const p of [...state.policies.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    wanted.push([p.id, `Policy ${p.name}${p.status === "deleted" ? " (deleted)" : ""}`]);
  }
  const current = [...select.options].map((o) => `${o.value}\u0000${o.textContent}`).join("\u0001");
  if (current === wanted.map(([v, t]) => `${v}\u0000${t}`).join("\u0001")) return;
  const value = select.value;
  select.replaceChildren(...wanted.map(([v, t]) => el("option", { value: v }, t)));
  select.value = wanted.some(([v]) => v === value) ? value : "";
}


function renderNameSuggestions() {
  /**
   * @param {string} id
   * @param {Set<string>} names
   */
  const fill = (id, names) => {
    const list = $(id);
    const text = [...names].sort().join("\n");
    if (list.dataset.names === text) return;
    list.dataset.names = text;
    list.replaceChildren(...[...names].sort().map((n) => el("option", { value: n })));
  };
  const policies = [...state.policies.values()];
  fill("source-names", new Set(["demo", ...policies.map((p) => p.source)]));
  fill("storage-names", new Set(["local", ...policies.map((p) => p.storage)]));
}
