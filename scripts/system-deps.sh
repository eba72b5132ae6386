#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Swabline needs, only those missing, with apt-get.
#   scripts/system-deps.sh demo   -> venv support, mosquitto
#   scripts/system-deps.sh test   -> also libzbar0 (pyzbar), chromium (browser tests),
#                                    gcc + Python headers + linux-libc-dev (evdev builds),
#                                    systemd (systemd-analyze verify, systemctl --root),
#                                    udev (udevadm test of the scanner rules)
set -euo pipefail
PYTHON3=${PYTHON3:-python3}
want=(mosquitto)
if ! "$PYTHON3" -c 'import ensurepip, venv' 2>/dev/null; then
  want+=("python3-venv")
fi
if [ "${1:-demo}" = test ]; then
  want+=(libzbar0 chromium linux-libc-dev systemd udev mosquitto-clients)
  command -v gcc >/dev/null || want+=(gcc)
  if ! "$PYTHON3" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    want+=(python3-dev)
  fi
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
