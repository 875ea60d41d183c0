// Live data: one WebSocket per container (console, state events, stats), shared by
// every view that wants it, and the node's /watch stream. Both reconnect by
// themselves; close code 4001 (token expired) and a refused handshake end the session.

import { socketUrl, session } from "./api.js";

export const HISTORY_SECONDS = 600;
const streams = new Map();

/** One container's socket; listeners get every message. Keeps 10 minutes of stats. */
class ContainerStream {
  constructor(id) {
    this.id = id;
    this.listeners = new Set();
    this.samples = []; // {t, cpu, mem, limit, rx, tx, rxRate, txRate}
    this.state = null; // last "event" data
    this.socket = null;
    this.retry = 1000;
    this.closed = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const socket = new WebSocket(socketUrl(`/ws/${encodeURIComponent(this.id)}`, {}, session.token));
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => { opened = true; this.retry = 1000; this.emit({ event: "open" }); });
    socket.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data.event === "stats") this.sample(data);
      if (data.event === "event") this.state = data.data;
      this.emit(data);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.emit({ event: "closed", code: event.code, opened });
      if (event.code === 4001) { expired("Your token expired: sign in again."); return; }
      if (this.closed) return;
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    });
  }

  sample(stats) {
    const t = Date.now() / 1000;
    const previous = this.samples[this.samples.length - 1];
    const rate = (now, before) => {
      if (!previous || now < before) return 0;
      return (now - before) / Math.max(t - previous.t, 0.25);
    };
    this.samples.push({
      t,
      cpu: stats.cpu_usage,
      mem: stats.memory_usage,
      limit: stats.memory_limit,
      rx: stats.network_rx,
      tx: stats.network_tx,
      rxRate: previous ? rate(stats.network_rx, previous.rx) : 0,
      txRate: previous ? rate(stats.network_tx, previous.tx) : 0,
    });
    while (this.samples.length && this.samples[0].t < t - HISTORY_SECONDS) this.samples.shift();
  }

  emit(data) { for (const listener of [...this.listeners]) listener(data); }

  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Sends a message; false when the socket is not open. */
  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  get open() { return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN); }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close(1000);
    this.socket = null;
  }
}

export function containerStream(id) {
  let stream = streams.get(id);
  if (!stream) {
    stream = new ContainerStream(id);
    streams.set(id, stream);
  }
  return stream;
}

export function peekStream(id) { return streams.get(id) || null; }

export function closeStream(id) {
  const stream = streams.get(id);
  if (stream) { stream.close(); streams.delete(id); }
}

export function openStreams() { return [...streams.keys()]; }

/** The node watch: a map of containers and ports kept current, and listeners. */
class NodeWatch {
  constructor() {
    this.containers = new Map();
    this.ports = new Map();
    this.version = null;
    this.listeners = new Set();
    this.socket = null;
    this.retry = 1000;
    this.closed = false;
    this.connected = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const params = this.version === null ? {} : { since: this.version };
    const socket = new WebSocket(socketUrl("/watch", params, session.token));
    this.socket = socket;
    socket.addEventListener("open", () => { this.retry = 1000; this.connected = true; this.emit(); });
    socket.addEventListener("message", (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      this.apply(data);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.connected = false;
      this.emit();
      if (this.closed) return;
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    });
  }

  apply(data) {
    if (data.event === "snapshot") {
      this.containers = new Map(data.containers.map((c) => [c.internal_id, c]));
      this.ports = new Map(data.ports.map((p) => [`${p.ip}:${p.port}`, p]));
      this.version = data.resource_version;
    } else if (data.event === "changed") {
      const target = data.kind === "container" ? this.containers : this.ports;
      if (data.type === "DELETED") target.delete(data.id);
      else target.set(data.id, data.object);
      this.version = data.resource_version;
    } else if (data.event === "heartbeat") {
      return;
    }
    this.emit();
  }

  emit() { for (const listener of [...this.listeners]) listener(this); }

  listen(listener) {
    this.listeners.add(listener);
    listener(this);
    return () => this.listeners.delete(listener);
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close(1000);
    this.socket = null;
  }
}

let watch = null;
export function nodeWatch() {
  if (!watch) watch = new NodeWatch();
  return watch;
}

let expired = () => {};
/** Called when a socket reports that the token expired. */
export function onExpired(handler) { expired = handler; }

/** Closes every socket (sign-out). */
export function closeAll() {
  for (const id of [...streams.keys()]) closeStream(id);
  if (watch) { watch.close(); watch = null; }
}
