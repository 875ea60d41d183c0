// The node view: every container live from /watch (state, install state, ports, last
// error, CPU and memory sparklines from each container's stats stream), the port pool,
// desired-state problems and the deletion guard (GET /desired), the engine (GET /system).

import { api } from "./api.js";
import { draw } from "./charts.js";
import { bytes, el, percent, tone, view } from "./dom.js";
import { closeStream, containerStream, nodeWatch, openStreams } from "./streams.js";

const MAX_STAT_STREAMS = 24;
const SPARK_SECONDS = 120;

export function mount(root, _params, { setCrumbs }) {
  setCrumbs([{ label: "Node" }]);
  const { root: page, refs } = view("tpl-node");
  root.append(page);
  const rows = new Map(); // id -> {row, refs}
  const offs = [];
  let stopped = false;

  async function loadSystem() {
    try {
      const system = await api("GET", "/system");
      refs.version.textContent = system.version;
      refs.engine.replaceChildren(system.docker.reachable
        ? el("span.badge.ok", {}, `reachable · ${system.docker.version || "?"}`)
        : el("span.badge.bad", { title: system.docker.error || "" }, "unreachable"));
      if (!system.docker.reachable && system.docker.error) {
        refs.engine.append(el("span.muted.small", {}, ` ${system.docker.error}`));
      }
      refs.nodeid.textContent = system.runtime.node_id;
    } catch (err) {
      refs.engine.replaceChildren(el("span.badge.bad", {}, err.message));
    }
  }

  async function loadDesired() {
    try {
      showDesired(await api("GET", "/desired"));
    } catch (err) {
      refs.blocked.textContent = err.message;
      refs.blocked.hidden = false;
    }
  }

  function showDesired(desired) {
    refs.folder.textContent = `${desired.folder}${desired.watching ? "" : " (not watched)"}`;
    refs.blocked.hidden = !desired.deletion_blocked;
    if (desired.deletion_blocked) {
      const held = desired.held.length ? ` Held: ${desired.held.join(", ")}.` : "";
      refs.blocked.textContent = `Deletion blocked: ${desired.deletion_blocked}.${held}`;
    }
    refs.noproblems.hidden = desired.problems.length > 0;
    refs.problems.replaceChildren(...desired.problems.map((p) => {
      const where = [p.file, p.line, p.column].filter((x) => x !== null && x !== undefined).join(":");
      return el("li", {}, el("code", {}, where), " ", p.reason);
    }));
  }

  function makeRow(id) {
    const link = el("a.mono.cid", { href: `#/c/${encodeURIComponent(id)}` }, id);
    const cells = {
      state: el("span.badge"),
      install: el("span.badge"),
      ports: el("span.mono.small"),
      cpu: el("canvas.spark", { "aria-hidden": "true" }),
      cpuText: el("span.num"),
      mem: el("canvas.spark", { "aria-hidden": "true" }),
      memText: el("span.num"),
      error: el("span.error-text"),
    };
    const row = el("tr", { dataset: { id } },
      el("td", { "data-label": "Container" }, el("div.who", {}, link, el("div.muted.small.image"))),
      el("td", { "data-label": "State" }, cells.state),
      el("td", { "data-label": "Install" }, cells.install),
      el("td", { "data-label": "Ports" }, cells.ports),
      el("td.metric", { "data-label": "CPU" }, el("span.pair", {}, cells.cpu, cells.cpuText)),
      el("td.metric", { "data-label": "Memory" }, el("span.pair", {}, cells.mem, cells.memText)),
      el("td", { "data-label": "Last error" }, cells.error));
    cells.image = row.querySelector(".image");
    return { row, cells };
  }

  function showWatch(watch) {
    if (stopped) return;
    const ids = [...watch.containers.keys()].sort();
    const up = ids.filter((id) => watch.containers.get(id).state === "running").length;
    refs.watchinfo.textContent = ids.length ? `${up} of ${ids.length} running` : "";
    refs.count.textContent = String(ids.length);
    refs.norows.hidden = ids.length > 0;
    for (const [id, entry] of rows) {
      if (!watch.containers.has(id)) { entry.row.remove(); rows.delete(id); closeStream(id); }
    }
    ids.forEach((id, index) => {
      const c = watch.containers.get(id);
      let entry = rows.get(id);
      if (!entry) { entry = makeRow(id); rows.set(id, entry); }
      if (refs.rows.children[index] !== entry.row) refs.rows.insertBefore(entry.row, refs.rows.children[index] || null);
      const { cells } = entry;
      cells.state.textContent = c.state;
      cells.state.className = `badge ${tone(c.state)}`;
      cells.install.textContent = c.install_state;
      cells.install.className = `badge ${tone(c.install_state)}`;
      cells.image.textContent = c.image;
      cells.ports.textContent = c.ports.map((p) => `${p.ip}:${p.port}/${p.protocol}`).join(" ") || "–";
      cells.error.textContent = c.document_error || c.last_error || "";
      if (index < MAX_STAT_STREAMS) follow(id, entry);
    });
    const ports = [...watch.ports.values()].sort((a, b) => a.port - b.port || a.ip.localeCompare(b.ip));
    refs.portsused.textContent = `${ports.filter((p) => p.in_use).length} of ${ports.length}`;
    refs.noports.hidden = ports.length > 0;
    refs.ports.replaceChildren(...ports.map((p) => el("tr", {},
      el("td.mono", { "data-label": "Address" }, p.ip),
      el("td.mono", { "data-label": "Port" }, p.port),
      el("td", { "data-label": "Protocol" }, p.protocol),
      el("td", { "data-label": "Status" }, el(`span.badge.${p.in_use ? "busy" : "ok"}`, {},
        p.container ? "bound" : p.reserved ? "reserved" : "free")),
      el("td", { "data-label": "Container" }, p.container
        ? el("a.mono", { href: `#/c/${encodeURIComponent(p.container)}` }, p.container) : "–"))));
  }

  function follow(id, entry) {
    if (entry.off) return;
    const stream = containerStream(id);
    entry.off = stream.listen((message) => { if (message.event === "stats") spark(entry, stream); });
    spark(entry, stream);
  }

  function spark(entry, stream) {
    const samples = stream.samples;
    const last = samples[samples.length - 1];
    const { cells } = entry;
    const now = Date.now() / 1000;
    const recent = samples.filter((s) => s.t >= now - SPARK_SECONDS);
    // Grows from 20 seconds to two minutes, so a new stream is not a dot at the edge.
    const windowSeconds = recent.length ? Math.min(SPARK_SECONDS, Math.max(20, now - recent[0].t + 2)) : 20;
    draw(cells.cpu, [{ points: recent.map((s) => [s.t, s.cpu]), color: "--cpu", fill: true }],
      { windowSeconds, min: 5 });
    draw(cells.mem, [{ points: recent.map((s) => [s.t, s.mem]), color: "--mem", fill: true }],
      { windowSeconds, min: 1024 * 1024 });
    const fresh = last && last.t > Date.now() / 1000 - 5;
    cells.cpuText.textContent = fresh ? percent(last.cpu) : "–";
    cells.memText.textContent = fresh ? bytes(last.mem) : "–";
  }

  loadSystem();
  loadDesired();
  offs.push(nodeWatch().listen(showWatch));
  const timer = setInterval(() => {
    loadDesired();
    for (const entry of rows.values()) {
      const id = entry.row.dataset.id;
      if (openStreams().includes(id)) spark(entry, containerStream(id));
    }
  }, 5000);
  const systemTimer = setInterval(loadSystem, 15000);

  return () => {
    stopped = true;
    clearInterval(timer);
    clearInterval(systemTimer);
    for (const off of offs) off();
    for (const entry of rows.values()) if (entry.off) entry.off();
  };
}
