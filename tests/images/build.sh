#!/usr/bin/env bash
# Builds the local test images (no registry is reachable): Debian's busybox-static
# copied into an empty root folder, then imported with `docker import`.
#   lightd-test/busybox:latest   /bin/busybox with its applets linked in /bin
# Installs busybox-static when it is missing (as root with apt-get).
set -euo pipefail

image=${LIGHTD_TEST_IMAGE:-lightd-test/busybox:latest}

# ldd succeeds only on a dynamic executable: the image needs the static build.
if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq busybox-static >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get install -y -qq busybox-static >/dev/null; }
  else
    echo "build.sh: a static /bin/busybox is needed (Debian: apt-get install busybox-static)" >&2
    exit 1
  fi
fi

if docker image inspect "$image" >/dev/null 2>&1 && [ "${LIGHTD_REBUILD_IMAGES:-0}" != 1 ]; then
  echo "build.sh: $image is present" >&2
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/home/container" "$root/mnt/server"
cp /bin/busybox "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import \
  --change 'CMD ["/bin/sh"]' \
  --change 'ENV PATH=/bin' \
  --change 'LABEL io.lightd.test=true' \
  - "$image" >/dev/null
echo "build.sh: built $image" >&2
