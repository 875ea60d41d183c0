#!/usr/bin/env bash
# Makes sure the file-system tools of the disk-limit backends and their tests are here:
# btrfs-progs (btrfs), e2fsprogs (mkfs.ext4, resize2fs, e2fsck) and mount/losetup.
# As root on Debian or Ubuntu it installs what is missing; elsewhere it says what is
# missing and stops only when run by the tests as root (the root-only tests need them).
set -euo pipefail

missing=()
command -v btrfs >/dev/null 2>&1 || missing+=(btrfs-progs)
{ command -v mkfs.ext4 && command -v resize2fs && command -v e2fsck; } >/dev/null 2>&1 || missing+=(e2fsprogs)
{ command -v losetup && command -v mount; } >/dev/null 2>&1 || missing+=(mount)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-disk-tools: missing ${missing[*]}; the root-only disk-limit tests will be skipped" >&2
  exit 0
fi
echo "ensure-disk-tools: installing ${missing[*]}..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}
