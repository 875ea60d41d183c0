#!/usr/bin/env bash
# Makes sure the tools backups and their tests use are installed: restic (the restic
# adapter) and e2fsprogs (mkfs.ext4, for the loop-mounted file systems of the full-disk
# tests). Installs Debian's packages where they are missing, as root with apt-get;
# otherwise says what to do. Never upgrades or removes anything.
set -euo pipefail

missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-backup-tools: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]}) and retry." >&2
  exit 1
fi

echo "ensure-backup-tools: installing Debian's ${missing[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
