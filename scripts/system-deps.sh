#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Swabline needs, only those missing, with apt-get.
#   scripts/system-deps.sh demo    -> venv support, mosquitto
#   scripts/system-deps.sh test    -> also libzbar0 (pyzbar), chromium (browser tests; Debian
#                                     only, see below), gcc + Python headers + linux-libc-dev
#                                     (evdev builds), systemd (systemd-analyze verify, systemctl
#                                     --root), udev (udevadm test of the scanner rules),
#                                     mosquitto-clients
#   scripts/system-deps.sh browser -> run once the virtual environment exists (VENV_PY names its
#                                     python). Debian: nothing (the chromium deb is there).
#                                     Ubuntu, whose chromium deb only wraps the snap (which does
#                                     not run in containers): Playwright's own Chromium and the
#                                     libraries it needs (playwright install --with-deps chromium).
set -euo pipefail
PYTHON3=${PYTHON3:-python3}
mode=${1:-demo}
# Where the distribution and Debian's Chromium are (overridden only by tests/test_system_deps.py).
OS_RELEASE=${OS_RELEASE:-/etc/os-release}
DEBIAN_CHROMIUM=${DEBIAN_CHROMIUM:-/usr/bin/chromium}
is_ubuntu() (  # Ubuntu or a derivative (ID_LIKE names it)
  [ -r "$OS_RELEASE" ] || exit 1
  . "$OS_RELEASE"
  [ "${ID:-}" = ubuntu ] || [[ " ${ID_LIKE:-} " == *" ubuntu "* ]]
)
if [ "$mode" = browser ]; then
  [ -x "$DEBIAN_CHROMIUM" ] && exit 0
  browsers=${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}
  compgen -G "$browsers/chromium-*/chrome-linux*/chrome" >/dev/null && exit 0
  if ! is_ubuntu; then
    echo "error: $DEBIAN_CHROMIUM is missing: 'apt-get install chromium' (or set SWABLINE_CHROMIUM to a Chromium executable)." >&2
    exit 1
  fi
  echo "Ubuntu: the browser tests use Playwright's Chromium (Ubuntu's chromium package is a snap wrapper);"
  echo "installing it and the libraries it needs: playwright install --with-deps chromium"
  if ! "${VENV_PY:?set VENV_PY to the python of the virtual environment}" -m playwright install --with-deps chromium; then
    echo "error: 'playwright install --with-deps chromium' failed; run it yourself, or set SWABLINE_CHROMIUM to a Chromium executable." >&2
    exit 1
  fi
  exit 0
fi
want=(mosquitto)
if ! "$PYTHON3" -c 'import ensurepip, venv' 2>/dev/null; then
  want+=("python3-venv")
fi
if [ "$mode" = test ]; then
  want+=(libzbar0 linux-libc-dev systemd udev mosquitto-clients)
  # Ubuntu has no usable chromium deb: the browser step (after the venv) takes Playwright's.
  is_ubuntu || want+=(chromium)
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
