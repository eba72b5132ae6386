#!/usr/bin/env bash
# Swabline station first boot: installs Swabline on a fresh Raspberry Pi OS (Lite, 64-bit,
# bookworm or later) and leaves the station waiting to be enrolled (swabline-provision.service
# reads an enrollment card from the scanner). Run once as root, by cloud-init (user-data in this
# folder) or by Raspberry Pi Imager's firstrun.sh; safe to run again. See
# docs/image-preparation.md.
#
# It expects, next to itself on the boot partition (/boot/firmware/swabline/):
#   swabline-src.tar.gz     the Swabline source tree (git archive of the release)
#   station.template.toml   the province's station template: firmware_config/station.template.toml
#                           with its [enrollment] servers and [workflow] tube patterns filled in
#   province-ca.crt         optional: the CA the server's HTTPS certificate comes from, when it is
#                           the province's own (named by [enrollment] server_ca in the template)
#   wheels/                 optional: wheels for an offline install (pip download -d wheels ...)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/swabline
log=/var/log/swabline-firstboot.log
exec > >(tee -a "$log") 2>&1
echo "swabline-firstboot: start $(date -Is)"
fail() { echo "swabline-firstboot: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root"
[ -f "$here/swabline-src.tar.gz" ] || fail "$here/swabline-src.tar.gz is missing"
# A station must know which server it may enroll with before it reads any card.
template="$here/station.template.toml"
[ -f "$template" ] || template=/etc/swabline/station.template.toml  # from an earlier run
[ -f "$template" ] || fail "$here/station.template.toml is missing (docs/image-preparation.md)"
if grep -q 'swabline\.example\.org' "$template"; then
  fail "$template still names the placeholder server swabline.example.org: fill in [enrollment] servers (docs/image-preparation.md)"
fi

# 1. System packages. picamera2, libcamera and the numpy they are built against come only from
#    Raspberry Pi OS's apt (not PyPI): the venv below sees them through --system-site-packages.
#    evdev is built by pip (our pinned version is newer than Debian's): gcc and headers.
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  python3-venv python3-pip python3-dev gcc linux-libc-dev python3-lgpio \
  python3-picamera2 python3-numpy libzbar0 systemd-timesyncd network-manager

# 2. Swabline in its own venv.
install -d -m 0755 "$prefix" "$prefix/src"
tar -xzf "$here/swabline-src.tar.gz" -C "$prefix/src"
[ -f "$prefix/src/pyproject.toml" ] || { echo "swabline-firstboot: no pyproject.toml in the archive" >&2; exit 1; }
[ -x "$prefix/venv/bin/python" ] || python3 -m venv --system-site-packages "$prefix/venv"
pip_args=(-q -c "$prefix/src/constraints.txt")
if [ -d "$here/wheels" ]; then
  pip_args+=(--no-index --find-links "$here/wheels")
fi
"$prefix/venv/bin/pip" install "${pip_args[@]}" "$prefix/src[pi]"
# The camera's decoder, without pip's numpy: a newer numpy in the venv would shadow the one
# picamera2 was compiled against and break it.
"$prefix/venv/bin/pip" install "${pip_args[@]}" --no-deps pyzbar
"$prefix/venv/bin/swabline" --help >/dev/null

# 3. Raspberry Pi OS settings for a headless station (firmware_config/pi/).
pi="$prefix/src/firmware_config/pi"
config_txt=/boot/firmware/config.txt
[ -f "$config_txt" ] || config_txt=/boot/config.txt
if ! grep -q "Swabline station" "$config_txt"; then
  cat "$pi/config.txt.fragment" >> "$config_txt"
fi
install -D -m 0644 "$pi/system.conf.d/swabline-watchdog.conf" /etc/systemd/system.conf.d/swabline-watchdog.conf
install -D -m 0644 "$pi/journald.conf.d/swabline.conf" /etc/systemd/journald.conf.d/swabline.conf
install -D -m 0644 "$pi/timesyncd.conf.d/swabline.conf" /etc/systemd/timesyncd.conf.d/swabline.conf
install -D -m 0644 "$pi/NetworkManager/conf.d/swabline-wifi-powersave.conf" /etc/NetworkManager/conf.d/swabline-wifi-powersave.conf
install -D -m 0644 "$pi/sysctl.d/90-swabline.conf" /etc/sysctl.d/90-swabline.conf
# No swap on the SD card.
if systemctl list-unit-files dphys-swapfile.service >/dev/null 2>&1; then
  dphys-swapfile swapoff || true
  systemctl disable --now dphys-swapfile.service || true
fi
# Fewer writes: no access-time updates on the root file system.
if ! grep -Eq '^[^#]+\s/\s+ext4\s+[^ ]*noatime' /etc/fstab; then
  sed -i -E 's#^([^#][^ ]+\s+/\s+ext4\s+)([^ ]+)#\1\2,noatime#' /etc/fstab
fi
# A station is updated deliberately, between campaigns, not by a timer in the middle of one.
systemctl disable --now apt-daily.timer apt-daily-upgrade.timer man-db.timer 2>/dev/null || true
systemctl disable --now bluetooth.service hciuart.service 2>/dev/null || true
systemctl enable systemd-timesyncd.service
timedatectl set-timezone Asia/Ho_Chi_Minh || true

# 4. The province's template (and CA), then units, udev rules, the 'swabline' user and the
#    'swabline' command on sudo's PATH; the station waits for its enrollment card.
install -d -m 0755 /etc/swabline
if [ "$template" != /etc/swabline/station.template.toml ]; then
  install -m 0644 "$template" /etc/swabline/station.template.toml
fi
if [ -f "$here/province-ca.crt" ]; then
  install -m 0644 "$here/province-ca.crt" /etc/swabline/province-ca.crt
fi
bash "$prefix/src/systemd/install.sh" station
echo "swabline-firstboot: done $(date -Is); rebooting to apply the watchdog and config.txt"
systemctl reboot
