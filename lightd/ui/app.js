// The console's entry point: sign-in, the hash router (#/, #/c/<id>, #/c/<id>/files)
// and the top bar. Views are modules with mount(root, params) returning an unmount.

import { api, ApiError, onUnauthorized, session } from "./api.js";
import { el, view } from "./dom.js";
import { closeAll, nodeWatch, onExpired } from "./streams.js";
import * as containerView from "./container.js";
import * as filesView from "./files.js";
import * as nodeView from "./node.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const signout = document.getElementById("signout");
const live = document.getElementById("live");
let unmount = null;
let liveOff = null;
let notice = "";

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  if (parts[0] === "c" && parts[1] && parts[2] === "files") {
    return { module: filesView, params: { id: parts[1], path: params.get("path") || "" } };
  }
  if (parts[0] === "c" && parts[1]) return { module: containerView, params: { id: parts[1] } };
  return { module: nodeView, params: {} };
}

function setCrumbs(items) {
  crumbs.replaceChildren(...items.map((item, index) => {
    const last = index === items.length - 1;
    return last
      ? el("span", { "aria-current": "page" }, item.label)
      : el("a", { href: item.href }, item.label);
  }));
}

function render() {
  if (unmount) { unmount(); unmount = null; }
  main.replaceChildren();
  if (!session.token) { showSignin(); return; }
  signout.hidden = false;
  if (session.master && !liveOff) {
    liveOff = nodeWatch().listen((watch) => {
      live.textContent = watch.connected ? "live" : "reconnecting…";
      live.classList.toggle("on", watch.connected);
    });
  }
  let { module, params } = route();
  if (!session.master && (module === nodeView || params.id !== session.scope)) {
    location.replace(`#/c/${encodeURIComponent(session.scope)}`);
    return;
  }
  unmount = module.mount(main, params, { setCrumbs, master: session.master });
  main.focus({ preventScroll: true });
}

function showSignin() {
  signout.hidden = true;
  setCrumbs([{ label: "Sign in" }]);
  const { root, refs } = view("tpl-signin");
  main.append(root);
  if (notice) { refs.error.textContent = notice; refs.error.hidden = false; notice = ""; }
  refs.token.focus();
  refs.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = refs.token.value.trim();
    const scope = refs.scope.value.trim();
    refs.error.hidden = true;
    if (!token) {
      refs.error.textContent = "Enter a token.";
      refs.error.hidden = false;
      return;
    }
    refs.submit.disabled = true;
    refs.submit.textContent = "Checking…";
    try {
      if (scope) await checkScoped(token, scope);
      else await api("GET", "/system", { token });
      session.save(token, scope);
      location.hash = scope ? `#/c/${encodeURIComponent(scope)}` : "#/";
      render();
    } catch (err) {
      refs.error.textContent = err instanceof ApiError && err.status === 401
        ? "This token was refused: it is wrong, expired or revoked, or it is a minted token "
          + "(those open one container: give its id below)."
        : err.message;
      refs.error.hidden = false;
      refs.token.select();
    } finally {
      refs.submit.disabled = false;
      refs.submit.textContent = "Sign in";
    }
  });
}

// A minted token cannot call REST: open the container's socket once to check it.
function checkScoped(token, scope) {
  return new Promise((resolve, reject) => {
    const url = new URL(`/ws/${encodeURIComponent(scope)}`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", token);
    const socket = new WebSocket(url.href);
    socket.addEventListener("open", () => { socket.close(1000); resolve(); });
    socket.addEventListener("error", () => {
      reject(new ApiError(401, "refused"));
    });
  });
}

function signOut(message = "") {
  if (liveOff) { liveOff(); liveOff = null; }
  live.textContent = "";
  closeAll();
  session.clear();
  notice = message;
  if (location.hash !== "" && location.hash !== "#/") history.replaceState(null, "", "#/");
  render();
}

signout.addEventListener("click", () => signOut());
onUnauthorized((message) => signOut(`Signed out: the daemon refused the token (${message}).`));
onExpired((message) => signOut(message));
window.addEventListener("hashchange", render);
render();
