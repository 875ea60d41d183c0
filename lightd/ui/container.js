// The container view: console (ANSI colours, replayed last lines, command line with
// history), power buttons that follow the real state, CPU / memory / network charts
// over the last 10 minutes, and the install log.

import { api } from "./api.js";
import { render as renderAnsi } from "./ansi.js";
import { draw } from "./charts.js";
import { bytes, el, percent, toast, tone, view } from "./dom.js";
import { HISTORY_SECONDS, containerStream, nodeWatch } from "./streams.js";

const MAX_LINES = 3000;
const REPLAY_LINES = 100;
const histories = new Map(); // container id -> commands typed, newest last

// Which power buttons make sense in which state.
export function powerAllowed(runtime, install) {
  if (install === "installing") return new Set();
  switch (runtime) {
    case "offline": return new Set(["start"]);
    case "starting": case "running": return new Set(["stop", "restart", "kill"]);
    case "stopping": return new Set(["kill"]);
    default: return new Set(["start", "kill"]);
  }
}

export function mount(root, { id }, { setCrumbs, master }) {
  setCrumbs([{ label: "Node", href: "#/" }, { label: id }]);
  const { root: page, refs } = view("tpl-container");
  root.append(page);
  refs.title.textContent = id;
  refs.fileslink.href = `#/c/${encodeURIComponent(id)}/files`;
  refs.fileslink.hidden = !master;
  refs.installDetails.hidden = !master;
  const stream = containerStream(id);
  const offs = [];
  const ansiState = { fg: null, bg: null, bold: false };
  let runtime = stream.state && ["starting", "running", "stopping"].includes(stream.state) ? stream.state : null;
  let install = null;
  let pending = "";

  // -- console -------------------------------------------------------------------
  const atBottom = () => refs.console.scrollHeight - refs.console.scrollTop - refs.console.clientHeight < 24;

  function addLines(text, kind = "") {
    const follow = atBottom();
    const fragment = document.createDocumentFragment();
    const lines = (pending + text).split("\n");
    pending = lines.pop();
    for (const line of lines) {
      const row = el(`div.line${kind ? `.${kind}` : ""}`);
      row.append(renderAnsi(line, ansiState));
      fragment.append(row);
    }
    refs.console.append(fragment);
    while (refs.console.childElementCount > MAX_LINES) refs.console.firstElementChild.remove();
    if (follow) refs.console.scrollTop = refs.console.scrollHeight;
  }

  function note(text, kind) { addLines(`${text}\n`, kind); }

  function replay(text) {
    refs.console.replaceChildren();
    pending = "";
    Object.assign(ansiState, { fg: null, bg: null, bold: false });
    addLines(text);
    refs.console.scrollTop = refs.console.scrollHeight;
  }

  refs.clear.addEventListener("click", () => refs.console.replaceChildren());

  // -- state and power -------------------------------------------------------------
  function showState() {
    refs.state.textContent = runtime || "unknown";
    refs.state.className = `badge ${tone(runtime)}`;
    refs.install.textContent = install ? `install ${install}` : "";
    refs.install.hidden = !install;
    refs.install.className = `badge ${tone(install)}`;
    const allowed = powerAllowed(runtime, install);
    for (const button of page.querySelectorAll("[data-action]")) {
      button.disabled = !allowed.has(button.dataset.action);
    }
    page.dataset.state = runtime || "";
  }

  function fromWatch(watch) {
    const c = watch.containers.get(id);
    if (!c) return;
    runtime = c.state;
    install = c.install_state;
    const bits = [c.image, c.ports.map((p) => `${p.ip}:${p.port}/${p.protocol}`).join(", "),
      c.limits && c.limits.memory ? `${bytes(c.limits.memory)} memory` : "",
      c.limits && c.limits.cpu ? `${c.limits.cpu} cpu` : "",
      c.crash_count ? `${c.crash_count} crashes` : ""].filter(Boolean);
    refs.meta.textContent = bits.join(" · ");
    const error = c.document_error || c.last_error;
    refs.lasterror.hidden = !error;
    refs.lasterror.textContent = error || "";
    showState();
  }

  function fromEvent(state) {
    if (["installing", "ready", "failed"].includes(state)) install = state;
    else if (state === "exit") runtime = "offline";
    else runtime = state;
    if (state === "installing") refs.console.append(el("div.line.daemon", {}, "[lightd] installing…"));
    if (state === "ready" || state === "failed") loadInstallLog();
    showState();
  }

  for (const button of page.querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      button.disabled = true;
      try {
        if (master) {
          const answer = await api("POST", `/containers/${encodeURIComponent(id)}/${action}`);
          toast(answer.message);
        } else if (!stream.send({ event: "power", action })) {
          toast("Not connected to the container's socket", "error");
        }
      } catch (err) {
        toast(err.message, "error");
        note(`[lightd] ${action}: ${err.message}`, "err");
      } finally {
        showState();
      }
    });
  }

  // -- command line ---------------------------------------------------------------
  const history = histories.get(id) || [];
  histories.set(id, history);
  let cursor = history.length;
  refs.commandForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const command = refs.command.value;
    if (!command.trim()) return;
    if (!stream.send({ event: "send_command", command })) {
      toast("Not connected to the container's socket", "error");
      return;
    }
    if (history[history.length - 1] !== command) history.push(command);
    if (history.length > 200) history.shift();
    cursor = history.length;
    refs.command.value = "";
  });
  refs.command.addEventListener("keydown", (event) => {
    if (event.key === "ArrowUp" && cursor > 0) {
      cursor -= 1;
      refs.command.value = history[cursor];
    } else if (event.key === "ArrowDown" && cursor < history.length) {
      cursor += 1;
      refs.command.value = history[cursor] ?? "";
    } else {
      return;
    }
    event.preventDefault();
    const end = refs.command.value.length;
    refs.command.setSelectionRange(end, end);
  });

  // -- charts ---------------------------------------------------------------------
  function drawCharts() {
    const samples = stream.samples;
    const last = samples[samples.length - 1];
    const fresh = last && last.t > Date.now() / 1000 - 5;
    // The axis grows with the data, from 30 seconds up to the ten minutes kept.
    const span = samples.length ? Date.now() / 1000 - samples[0].t : 0;
    const windowSeconds = Math.min(HISTORY_SECONDS, Math.max(30, Math.ceil(span / 30) * 30));
    const spanText = windowSeconds < 60 ? `${windowSeconds} seconds` : `${windowSeconds / 60} minute${windowSeconds > 60 ? "s" : ""}`;
    const common = { windowSeconds, grid: true };
    const cpuTop = Math.max(5, ...samples.map((s) => s.cpu)) * 1.2;
    draw(refs.cpu, [{ points: samples.map((s) => [s.t, s.cpu]), color: "--cpu", fill: true }],
      { ...common, max: cpuTop, label: percent });
    draw(refs.mem, [{ points: samples.map((s) => [s.t, s.mem]), color: "--mem", fill: true }],
      { ...common, min: 1024 * 1024, label: bytes });
    draw(refs.net, [
      { points: samples.map((s) => [s.t, s.rxRate]), color: "--rx" },
      { points: samples.map((s) => [s.t, s.txRate]), color: "--tx" },
    ], { ...common, min: 1024, label: (v) => `${bytes(v)}/s` });
    refs.cpuNow.textContent = fresh ? percent(last.cpu) : "–";
    refs.memNow.textContent = fresh ? `${bytes(last.mem)} of ${bytes(last.limit)}` : "–";
    refs.netNow.textContent = fresh ? `↓ ${bytes(last.rxRate)}/s ↑ ${bytes(last.txRate)}/s` : "–";
    refs.span.textContent = `Last ${spanText} · up to 10 minutes are kept`;
  }

  // -- install log ----------------------------------------------------------------
  async function loadInstallLog() {
    if (!master) return;
    try {
      const text = await api("GET", `/containers/${encodeURIComponent(id)}/install-log`, { as: "text" });
      refs.installLog.replaceChildren(renderAnsi(text || "", { fg: null, bg: null, bold: false }));
      refs.installInfo.textContent = text ? "" : "No install output (no install script, or not run yet).";
    } catch (err) {
      refs.installInfo.textContent = err.message;
    }
  }
  refs.installRefresh.addEventListener("click", loadInstallLog);

  // -- wiring ---------------------------------------------------------------------
  offs.push(stream.listen((message) => {
    switch (message.event) {
      case "logs": replay(message.data); break;
      case "console": addLines(message.data); break;
      case "event": fromEvent(message.data); break;
      case "daemon_message": note(`[lightd] ${message.data}`, "daemon"); break;
      case "error": note(`[lightd] ${message.data}`, "err"); break;
      case "stats": break;
      case "closed": if (message.opened) note("[lightd] connection lost, reconnecting…", "daemon"); break;
      default: break;
    }
  }));
  if (stream.open) stream.send({ event: "logs", lines: REPLAY_LINES });
  if (master) offs.push(nodeWatch().listen(fromWatch));
  showState();
  loadInstallLog();
  drawCharts();
  const timer = setInterval(drawCharts, 1000);
  const resize = () => drawCharts();
  window.addEventListener("resize", resize);

  return () => {
    clearInterval(timer);
    window.removeEventListener("resize", resize);
    for (const off of offs) off();
  };
}
