#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Swabline's demo and tests need, only those missing.
#   scripts/system-deps.sh demo   -> mosquitto
#   scripts/system-deps.sh test   -> mosquitto, libzbar0, chromium, headers for evdev
set -euo pipefail
want=(mosquitto)
if [ "${1:-demo}" = test ]; then
  want+=(libzbar0 chromium linux-libc-dev)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing missing system packages: ${missing[*]}"
if ! command -v apt-get >/dev/null; then
  echo "error: apt-get not found. Install these packages yourself: ${missing[*]}" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "error: need root to install ${missing[*]} (no sudo found). Install them and re-run." >&2
    exit 1
  fi
fi
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
  echo "error: could not install ${missing[*]} with apt-get; install them and re-run." >&2
  exit 1
fi
# Debian's mosquitto package starts a system-wide broker on 1883; Swabline never uses it.
