// The Backups panel of the container view: the volume's backups newest first, followed
// live from /watch (`kind: "backup"`), and create, download, restore and delete. The
// daemon's error messages are shown exactly as it words them.

import { api } from "./api.js";
import { ask, bytes, el, toast, when } from "./dom.js";
import { nodeWatch } from "./streams.js";

function badgeTone(state) {
  if (state === "done") return "ok";
  if (state === "running") return "busy";
  if (state === "failed") return "bad";
  return "off";
}

function progressOf(part) {
  const { bytes_done: done, bytes_total: total } = part.progress || {};
  const bar = el("progress", { max: 100, "aria-label": "Progress" });
  let text = "waiting";
  if (total > 0) {
    const share = Math.min(100, Math.round((done / total) * 100));
    bar.value = share;
    text = `${share}%`;
  } else if (done > 0) {
    text = bytes(done);
  }
  return el("span.progress", {}, bar, el("span.muted.num", {}, text));
}

/** Mounts the panel into `refs` (the container view's); returns its unmount. */
export function mountBackups(refs, id, system) {
  const backups = new Map(); // backup_id -> view
  let volume = null;
  let alive = true;
  const base = () => `/volumes/${encodeURIComponent(volume)}/backups`;

  function fail(err) {
    refs.backupError.textContent = err.message;
    refs.backupError.hidden = false;
  }

  function show() {
    const list = [...backups.values()].sort((a, b) => b.created_at - a.created_at);
    refs.backupEmpty.hidden = list.length > 0;
    refs.backupRows.replaceChildren(...list.map(row));
  }

  function row(b) {
    const busy = b.state === "running" || (b.restore && b.restore.state === "running");
    const state = el("div.states",
      {},
      el(`span.badge.${badgeTone(b.state)}`, {}, b.state),
      b.state === "running" ? progressOf(b) : null);
    if (b.restore) {
      state.append(el(`span.badge.${badgeTone(b.restore.state)}`, {},
        `restore ${b.restore.state}${b.restore.truncate ? " (truncate)" : ""}`));
      if (b.restore.state === "running") state.append(progressOf(b.restore));
    }
    const error = b.state === "failed" ? b.error : b.restore && b.restore.state === "failed" ? b.restore.error : null;
    const label = b.name || b.backup_id.slice(0, 8);
    const done = b.state === "done";
    const actions = el("div.row-actions",
      {},
      el("button.small", { type: "button", disabled: !done, onclick: () => download(b), "aria-label": `Download ${label}` }, "Download"),
      el("button.small", { type: "button", disabled: !done || busy, onclick: () => restore(b), "aria-label": `Restore ${label}` }, "Restore"),
      el("button.small.danger", { type: "button", disabled: busy, onclick: () => remove(b), "aria-label": `Delete ${label}` }, "Delete"));
    return el("tr", { dataset: { id: b.backup_id, state: b.state, restore: b.restore ? b.restore.state : "" } },
      el("td", { "data-label": "Name" }, el("div.bcell", {},
        el("span.bname", {}, b.name || "(unnamed)"),
        el("span.muted.mono.bid", {}, b.backup_id.slice(0, 8)),
        error ? el("span.berror", {}, error) : null)),
      el("td", { "data-label": "Adapter" }, b.adapter),
      el("td", { "data-label": "State" }, state),
      el("td.num", { "data-label": "Size" }, done ? bytes(b.size) : "–"),
      el("td", { "data-label": "Created" }, when(b.created_at)),
      el("td.actions", { "data-label": "Actions" }, actions));
  }

  // What /watch told while a list was on its way wins over that (older) list.
  let told = null;

  async function load() {
    if (!volume) return;
    const mine = new Map();
    told = mine;
    try {
      const answer = await api("GET", base());
      if (!alive) return;
      backups.clear();
      for (const b of answer.backups) backups.set(b.backup_id, b);
      for (const [key, b] of mine) {
        if (b === null) backups.delete(key); else backups.set(key, b);
      }
      refs.backupError.hidden = true;
      show();
    } catch (err) { fail(err); } finally { if (told === mine) told = null; }
  }

  function changed(data) {
    if (data.event === "snapshot") { load(); return; }
    if (data.kind !== "backup" || !data.object || data.object.volume_id !== volume) return;
    const gone = data.type === "DELETED";
    if (gone) backups.delete(data.id);
    else backups.set(data.id, data.object);
    if (told) told.set(data.id, gone ? null : data.object);
    show();
  }

  async function act(work) {
    refs.backupError.hidden = true;
    try {
      const answer = await work();
      if (answer && answer.message) toast(answer.message);
      await load();
    } catch (err) { fail(err); }
  }

  async function download(b) {
    refs.backupError.hidden = true;
    try {
      // A plain link cannot carry the bearer token: fetch, then save through a Blob URL.
      const blob = await api("GET", `${base()}/${encodeURIComponent(b.backup_id)}/download`, { as: "blob" });
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: `${b.name || b.backup_id}.tar.gz`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) { fail(err); }
  }

  async function restore(b) {
    const answer = await ask({
      title: `Restore ${b.name || b.backup_id.slice(0, 8)}?`,
      message: "The backup's files replace their namesakes in the volume; a running container "
        + "is stopped for the restore and started again after it.",
      check: "Truncate: make the volume exactly the backup (files not in it are deleted)",
      ok: "Restore", input: false, danger: true,
    });
    if (!answer) return;
    act(() => api("POST", `${base()}/${encodeURIComponent(b.backup_id)}/restore`, { json: { truncate: answer.checked } }));
  }

  async function remove(b) {
    const sure = await ask({
      title: `Delete backup ${b.name || b.backup_id.slice(0, 8)}?`,
      message: "It is removed from its store and cannot be restored any more.",
      ok: "Delete", input: false, danger: true,
    });
    if (!sure) return;
    act(() => api("DELETE", `${base()}/${encodeURIComponent(b.backup_id)}`));
  }

  refs.backupForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!volume) return;
    const json = { adapter: refs.backupAdapter.value };
    const name = refs.backupName.value.trim();
    if (name) json.name = name;
    refs.backupCreate.disabled = true;
    act(async () => {
      try {
        const answer = await api("POST", base(), { json });
        refs.backupName.value = "";
        toast("Backup started");
        return answer;
      } finally { refs.backupCreate.disabled = false; }
    });
  });

  // The adapters this node offers (GET /system `backups`): archive always.
  const offered = (system && system.backups && system.backups.adapters) || ["archive"];
  refs.backupAdapter.replaceChildren(...offered.map((name) => el("option", { value: name }, name)));
  const preferred = system && system.backups && system.backups.default_adapter;
  if (preferred && offered.includes(preferred)) refs.backupAdapter.value = preferred;

  const off = nodeWatch().follow(changed);
  (async () => {
    try {
      const container = await api("GET", `/containers/${encodeURIComponent(id)}`);
      if (!alive) return;
      volume = container.volume_id;
      refs.backupVolume.textContent = `volume ${volume}`;
      load();
    } catch (err) { fail(err); }
  })();

  return () => { alive = false; off(); };
}
