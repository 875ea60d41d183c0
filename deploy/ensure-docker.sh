#!/usr/bin/env bash
# Makes sure a Docker engine answers `docker info`.
# 1. If one answers already, use it.
# 2. Otherwise, as root on Debian or Ubuntu: install the docker.io package if dockerd is
#    missing, start dockerd in the background (log in $LIGHTD_DOCKERD_LOG, default
#    /var/log/lightd-dockerd.log) and wait up to 60 s for it.
# 3. Otherwise stop with a message that says what to do.
set -euo pipefail

log=${LIGHTD_DOCKERD_LOG:-/var/log/lightd-dockerd.log}

answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

if answers; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: no Docker engine answers 'docker info', and this is not root." >&2
  echo "ensure-docker: start Docker (sudo systemctl start docker) or add your user to the 'docker' group, then retry." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-docker: no Docker engine and no apt-get: install Docker for this system, start it, then retry." >&2
    exit 1
  fi
  echo "ensure-docker: installing Debian's docker.io package..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io >/dev/null
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl start docker >/dev/null 2>&1 || true
fi

if ! answers; then
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "ensure-docker: starting dockerd in the background (log: $log)" >&2
    mkdir -p "$(dirname "$log")"
    # setsid: dockerd outlives the shell, job or test that started it.
    setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    answers && break
    sleep 1
  done
fi

if ! answers; then
  echo "ensure-docker: dockerd did not answer within 60 s; see $log" >&2
  tail -n 20 "$log" >&2 2>/dev/null || true
  exit 1
fi
echo "ensure-docker: Docker engine $(docker version --format '{{.Server.Version}}') answers" >&2
