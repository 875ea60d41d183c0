// The SFTP panel of the container view: the container's credential (GET .../sftp/info,
// never a secret), a form to create or replace it, revocation, and the connection hint
// with the host key fingerprint from GET /system. A password lightd generates is shown
// once, with a copy button, and forgotten when the panel closes.

import { api } from "./api.js";
import { ask, toast } from "./dom.js";

function address(host) {
  // A wildcard listen address means "this machine": the page's own host name.
  if (!host || host === "0.0.0.0" || host === "::") return location.hostname;
  return host.includes(":") ? `[${host}]` : host;
}

/** Mounts the panel into `refs` (the container view's); returns its unmount. */
export function mountSftp(refs, id, system) {
  const path = `/containers/${encodeURIComponent(id)}`;
  const sftp = (system && system.sftp) || null;
  let alive = true;
  let current = null;

  function fail(err) {
    refs.sftpError.textContent = err.message;
    refs.sftpError.hidden = false;
  }

  function show(info) {
    current = info;
    refs.sftpNone.hidden = Boolean(info);
    refs.sftpFacts.hidden = !info;
    refs.sftpRevoke.hidden = !info;
    refs.sftpFormTitle.textContent = info ? "Replace credentials" : "Create credentials";
    refs.sftpSubmit.textContent = info ? "Replace credentials" : "Create credentials";
    refs.sftpSessions.textContent = info ? `${info.sessions} session${info.sessions === 1 ? "" : "s"}` : "";
    refs.sftpSessions.className = `badge ${info && info.sessions ? "ok" : "off"}`;
    if (!info) return;
    refs.sftpUrl.textContent = `sftp://${info.username}@${address(info.host)}:${info.port}`;
    refs.sftpUser.textContent = info.username;
    refs.sftpPath.textContent = info.volume_path;
    refs.sftpPerms.textContent = info.permissions.length ? info.permissions.join(", ") : "none";
    refs.sftpKeys.textContent = info.public_keys.length
      ? info.public_keys.map((key) => key.split(/\s+/).slice(0, 1).concat(key.split(/\s+/).slice(2)).join(" ")).join("; ")
      : "none (password only)";
    refs.sftpKeys.title = info.public_keys.join("\n");
    refs.sftpFingerprint.textContent = sftp && sftp.host_key_fingerprint
      ? sftp.host_key_fingerprint : "–";
  }

  async function load() {
    try {
      const info = await api("GET", `${path}/sftp/info`);
      if (!alive) return;
      refs.sftpError.hidden = true;
      show(info);
    } catch (err) {
      if (!alive) return;
      if (err.status === 404 && err.message === "No SFTP credentials for this container") {
        refs.sftpError.hidden = true;
        show(null);
      } else {
        fail(err);
      }
    }
  }

  function reveal(password) {
    refs.secretValue.textContent = password;
    refs.secret.hidden = false;
    refs.secretCopy.focus();
  }

  function hideSecret() {
    refs.secretValue.textContent = "";
    refs.secret.hidden = true;
  }

  refs.secretCopy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(refs.secretValue.textContent);
      toast("Password copied");
    } catch {
      // No clipboard (permission, insecure origin): select it for a manual copy.
      const range = document.createRange();
      range.selectNodeContents(refs.secretValue);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      toast("Press Ctrl+C to copy the selected password");
    }
  });
  refs.secretHide.addEventListener("click", hideSecret);

  refs.sftpForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    refs.sftpError.hidden = true;
    const json = {
      permissions: [...refs.sftpForm.querySelectorAll("input[name=perm]:checked")].map((box) => box.value),
    };
    const username = refs.sftpUsername.value.trim();
    if (username) json.username = username;
    if (refs.sftpPassword.value) json.password = refs.sftpPassword.value;
    const keys = refs.sftpKeysInput.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (keys.length) json.public_keys = keys;
    if (current) {
      const sure = await ask({
        title: "Replace the SFTP credentials?",
        message: `The login ${current.username} stops working and its open sessions are closed.`,
        ok: "Replace", input: false, danger: true,
      });
      if (!sure) return;
    }
    refs.sftpSubmit.disabled = true;
    try {
      const answer = await api("POST", `${path}/sftp/credentials`, { json });
      hideSecret();
      refs.sftpPassword.value = "";
      if (answer.password) reveal(answer.password);
      else toast("SFTP credentials saved");
      await load();
    } catch (err) {
      fail(err);
    } finally {
      refs.sftpSubmit.disabled = false;
    }
  });

  refs.sftpRevoke.addEventListener("click", async () => {
    const sure = await ask({
      title: "Revoke the SFTP credentials?",
      message: "The login stops working at once and its open sessions are closed.",
      ok: "Revoke", input: false, danger: true,
    });
    if (!sure) return;
    refs.sftpError.hidden = true;
    try {
      const answer = await api("DELETE", `${path}/sftp/credentials`);
      hideSecret();
      toast(answer.message);
      await load();
    } catch (err) { fail(err); }
  });

  if (sftp && !sftp.enabled) {
    refs.sftpNone.textContent = "SFTP is disabled on this node (sftp.enabled).";
  }
  refs.sftpUsername.placeholder = id;
  load();
  return () => { alive = false; hideSecret(); };
}
