// Small DOM helpers: template cloning with data-ref lookups, element building without
// innerHTML (every text goes through textContent), number formatting, toasts.

/** Clones <template id=name>; returns its root element and {ref: element} for data-ref. */
export function view(name) {
  const template = document.getElementById(name);
  const root = template.content.firstElementChild.cloneNode(true);
  return { root, refs: refsOf(root) };
}

export function refsOf(root) {
  const refs = {};
  for (const el of root.querySelectorAll("[data-ref]")) refs[el.dataset.ref] = el;
  if (root.dataset && root.dataset.ref) refs[root.dataset.ref] = root;
  return refs;
}

/** el("a.link", {href: "#"}, "text", child…): attributes and children, never raw HTML. */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
export function bytes(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  let n = Math.max(0, value);
  let unit = 0;
  while (n >= 1024 && unit < UNITS.length - 1) { n /= 1024; unit += 1; }
  return `${n >= 100 || unit === 0 ? Math.round(n) : n.toFixed(1)} ${UNITS[unit]}`;
}

export function percent(value) {
  if (value === null || value === undefined) return "–";
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)}%`;
}

export function when(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleString(undefined, {
    dateStyle: "medium", timeStyle: "short",
  });
}

/** A badge class for a runtime or install state. */
export function tone(state) {
  switch (state) {
    case "running": case "ready": return "ok";
    case "starting": case "stopping": case "installing": return "busy";
    case "failed": return "bad";
    default: return "off";
  }
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = el(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, message);
  box.append(item);
  while (box.childElementCount > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 3500);
}

/** A <dialog> question: resolves to the text typed (ask) or true (confirm), null when cancelled. */
export function ask({ title, message = "", label = "", value = "", ok = "OK", input = true }) {
  const dialog = document.getElementById("ask");
  const refs = refsOf(dialog);
  refs.title.textContent = title;
  refs.message.textContent = message;
  refs.message.hidden = !message;
  refs.label.textContent = label;
  refs.label.hidden = !input;
  refs.input.hidden = !input;
  refs.input.required = input;
  refs.input.value = value;
  refs.ok.textContent = ok;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") resolve(null);
      else resolve(input ? refs.input.value : true);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    if (input) { refs.input.focus(); refs.input.select(); }
  });
}
