// The files view of a container's volume: browse, upload (drag and drop or the file
// picker, with progress), download, edit small text files, rename, delete, make and
// extract archives. The daemon's error messages are shown exactly as it words them.

import { api, upload } from "./api.js";
import { ask, bytes, el, toast, view, when } from "./dom.js";

const EDIT_LIMIT = 1024 * 1024;
const ARCHIVE = /\.(tar|tar\.gz|tgz|tar\.bz2|tbz2|tar\.xz|txz|zip)$/i;

function join(folder, name) { return folder ? `${folder}/${name}` : name; }
function parent(path) { return path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ""; }
function query(path) { return `?path=${encodeURIComponent(path)}`; }

export function mount(root, { id, path: startPath }, { setCrumbs }) {
  const { root: page, refs } = view("tpl-files");
  root.append(page);
  let folder = startPath.replace(/^\/+|\/+$/g, "");
  let volume = null;
  let editing = null;
  let alive = true;
  const selected = new Set();

  setCrumbs([
    { label: "Node", href: "#/" },
    { label: id, href: `#/c/${encodeURIComponent(id)}` },
    { label: "Files" },
  ]);

  const base = () => `/volumes/${encodeURIComponent(volume)}`;

  function fail(err) {
    refs.error.textContent = err.message;
    refs.error.hidden = false;
  }

  function go(path) {
    folder = path;
    history.replaceState(null, "", `#/c/${encodeURIComponent(id)}/files${path ? query(path) : ""}`);
    list();
  }

  function showPath() {
    const parts = folder ? folder.split("/") : [];
    const items = [el("button.link", { type: "button", onclick: () => go("") }, "/home/container")];
    parts.forEach((part, index) => {
      const target = parts.slice(0, index + 1).join("/");
      items.push(el("span.sep", { "aria-hidden": "true" }, "/"));
      items.push(index === parts.length - 1
        ? el("span", { "aria-current": "location" }, part)
        : el("button.link", { type: "button", onclick: () => go(target) }, part));
    });
    refs.path.replaceChildren(...items);
    refs.up.disabled = !folder;
  }

  async function list() {
    refs.error.hidden = true;
    showPath();
    selected.clear();
    refs.all.checked = false;
    refs.compress.disabled = true;
    try {
      const answer = await api("GET", `${base()}/files${query(folder)}`);
      if (!alive) return;
      refs.empty.hidden = answer.files.length > 0;
      refs.rows.replaceChildren(...answer.files.map(row));
    } catch (err) {
      refs.rows.replaceChildren();
      fail(err);
    }
  }

  function row(entry) {
    const path = join(folder, entry.name);
    const isDir = entry.type === "directory";
    const check = el("input", { type: "checkbox", "aria-label": `Select ${entry.name}` });
    check.addEventListener("change", () => {
      if (check.checked) selected.add(path); else selected.delete(path);
      refs.compress.disabled = selected.size === 0;
    });
    const name = isDir
      ? el("button.link.entry.dir", { type: "button", onclick: () => go(path) }, `${entry.name}/`)
      : entry.type === "file" && entry.size <= EDIT_LIMIT
        ? el("button.link.entry", { type: "button", title: "Edit", onclick: () => edit(path) }, entry.name)
        : el("span.entry", {}, entry.name, entry.type === "symlink" ? " →" : "");
    const actions = el("div.row-actions");
    if (entry.type === "file") {
      actions.append(el("button.small", { type: "button", onclick: () => download(path, entry.name) }, "Download"));
      if (ARCHIVE.test(entry.name)) {
        actions.append(el("button.small", { type: "button", onclick: () => extract(path) }, "Extract"));
      }
    }
    actions.append(
      el("button.small", { type: "button", onclick: () => rename(path, entry.name) }, "Rename"),
      el("button.small.danger", { type: "button", onclick: () => remove(path, isDir) }, "Delete"),
    );
    return el("tr", { dataset: { name: entry.name, type: entry.type } },
      el("td.check", {}, check),
      el("td", { "data-label": "Name" }, name),
      el("td.num", { "data-label": "Size" }, isDir ? "–" : bytes(entry.size)),
      el("td.mono", { "data-label": "Mode" }, entry.mode),
      el("td", { "data-label": "Modified" }, when(entry.modified_at)),
      el("td.actions", { "data-label": "Actions" }, actions));
  }

  async function act(work, done) {
    refs.error.hidden = true;
    try {
      const answer = await work();
      if (answer && answer.message) toast(answer.message);
      if (done) done(answer);
      await list();
    } catch (err) {
      fail(err);
    }
  }

  async function download(path, name) {
    try {
      const blob = await api("GET", `${base()}/files/content${query(path)}`, { as: "blob" });
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) { fail(err); }
  }

  async function rename(path, name) {
    const to = await ask({ title: `Rename ${name}`, label: "New name or path", value: name, ok: "Rename" });
    if (to === null || to === name || !to.trim()) return;
    const target = to.includes("/") ? to.replace(/^\/+/, "") : join(folder, to);
    act(() => api("POST", `${base()}/move`, { json: { from: path, to: target } }));
  }

  async function remove(path, isDir) {
    const sure = await ask({
      title: `Delete ${path}?`,
      message: isDir ? "The folder and everything in it are deleted." : "The file is deleted.",
      ok: "Delete", input: false,
    });
    if (!sure) return;
    act(() => api("DELETE", `${base()}/files${query(path)}`));
  }

  async function extract(path) {
    const base_ = path.replace(ARCHIVE, "").split("/").pop();
    const destination = await ask({ title: `Extract ${path}`, label: "Into folder", value: join(folder, base_), ok: "Extract" });
    if (destination === null) return;
    act(() => api("POST", `${base()}/decompress`, { json: { archive_path: path, destination } }),
      (answer) => { if (answer.skipped && answer.skipped.length) toast(`${answer.skipped.length} entries skipped`, "error"); });
  }

  async function compress() {
    const name = await ask({ title: "Compress selected", label: "Archive name (.tar.gz is added)", value: "archive", ok: "Compress" });
    if (!name) return;
    act(() => api("POST", `${base()}/compress`, {
      json: { format: "tar.gz", output_name: join(folder, name.replace(/\.tar\.gz$/, "")), paths: [...selected] },
    }));
  }

  async function edit(path) {
    try {
      const text = await api("GET", `${base()}/files/content${query(path)}`, { as: "text" });
      editing = path;
      refs.editName.textContent = path;
      refs.text.value = text;
      refs.editor.hidden = false;
      refs.text.focus();
    } catch (err) { fail(err); }
  }

  refs.save.addEventListener("click", async () => {
    if (editing === null) return;
    try {
      const answer = await api("PUT", `${base()}/files/content${query(editing)}`, {
        body: new Blob([refs.text.value], { type: "text/plain" }),
      });
      toast(answer.message);
      list();
    } catch (err) { fail(err); }
  });
  refs.close.addEventListener("click", () => { refs.editor.hidden = true; editing = null; });

  async function send(files) {
    for (const file of files) {
      const bar = el("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
      const label = el("span.muted", {}, "0%");
      const item = el("li", {}, el("span.mono", {}, file.name), bar, label);
      refs.uploads.append(item);
      try {
        await upload(`${base()}/files/content${query(join(folder, file.name))}`, file, (sent, total) => {
          const share = total ? Math.round((sent / total) * 100) : 100;
          bar.value = share;
          label.textContent = `${share}%`;
        });
        label.textContent = "done";
        item.classList.add("done");
        setTimeout(() => item.remove(), 4000);
      } catch (err) {
        label.textContent = err.message;
        item.classList.add("failed");
        fail(err);
      }
    }
    list();
  }

  refs.upload.addEventListener("change", () => {
    const files = [...refs.upload.files];
    refs.upload.value = "";
    send(files);
  });
  for (const name of ["dragenter", "dragover"]) {
    refs.drop.addEventListener(name, (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes("Files")) return;
      event.preventDefault();
      refs.drop.classList.add("over");
    });
  }
  refs.drop.addEventListener("dragleave", (event) => {
    if (!refs.drop.contains(event.relatedTarget)) refs.drop.classList.remove("over");
  });
  refs.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    refs.drop.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) send([...event.dataTransfer.files]);
  });

  refs.up.addEventListener("click", () => go(parent(folder)));
  refs.refresh.addEventListener("click", list);
  refs.compress.addEventListener("click", compress);
  refs.all.addEventListener("change", () => {
    for (const box of refs.rows.querySelectorAll("td.check input")) {
      box.checked = refs.all.checked;
      box.dispatchEvent(new Event("change"));
    }
  });
  refs.mkdir.addEventListener("click", async () => {
    const name = await ask({ title: "New folder", label: "Folder name", ok: "Create" });
    if (name) act(() => api("POST", `${base()}/folders`, { json: { path: join(folder, name) } }));
  });
  refs.newfile.addEventListener("click", async () => {
    const name = await ask({ title: "New file", label: "File name", ok: "Create" });
    if (!name) return;
    const path = join(folder, name);
    act(() => api("POST", `${base()}/files`, { json: { path, content: "" } }), () => edit(path));
  });

  (async () => {
    try {
      const container = await api("GET", `/containers/${encodeURIComponent(id)}`);
      volume = container.volume_id;
      refs.volume.textContent = `volume ${volume}`;
      list();
    } catch (err) { fail(err); }
  })();

  return () => { alive = false; };
}
