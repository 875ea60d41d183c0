#!/usr/bin/env bash
# Makes sure the tools the SFTP tests and bench/sftp.py drive are installed:
# OpenSSH's `sftp` client and `ssh-keygen` (openssh-client) and its `sftp-server`
# (openssh-sftp-server, run with `sftp -D`, no SSH daemon needed).
# Missing ones are installed with apt-get when running as root on Debian or Ubuntu;
# otherwise this stops with a message that says what to install.
set -euo pipefail

missing=()
command -v sftp >/dev/null 2>&1 || missing+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/lib/openssh/sftp-server ] || [ -x /usr/libexec/openssh/sftp-server ] || missing+=(openssh-sftp-server)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# one name each
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-test-tools: missing ${missing[*]}; install them (apt-get install ${missing[*]}) and retry." >&2
  exit 1
fi
echo "ensure-test-tools: installing ${missing[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
