#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests of the web console
# (tests/ui, driven by Playwright with executable_path, never a downloaded browser).
# 1. If $LIGHTD_CHROMIUM (default /usr/bin/chromium) runs, use it.
# 2. Otherwise, as root with apt-get: install Debian's chromium package.
# 3. Otherwise say so and exit 0: the browser tests then skip with the reason.
set -euo pipefail

chromium=${LIGHTD_CHROMIUM:-/usr/bin/chromium}

if [ -x "$chromium" ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $chromium is missing; install Debian's chromium package to run tests/ui (they skip without it)." >&2
  exit 0
fi

echo "ensure-chromium: installing Debian's chromium package..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
"$chromium" --version >&2
