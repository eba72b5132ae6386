#!/usr/bin/env bash
# Installs Swabline's systemd units on this machine, or into a mounted image with --root.
#
#   systemd/install.sh [--root DIR] [--no-enable] station|server|broker
#
#   station  swabline-agent.service + swabline-provision.service, the udev rules for scanners,
#            user 'swabline' (groups input, gpio, dialout, video), /etc/swabline, and
#            /usr/local/bin/swabline (so that 'sudo swabline provision ...' finds the command)
#   server   swabline-server.service + swabline-ingest@.service, user 'swabline-server'
#   broker   swabline-mosquitto.service (Debian's own mosquitto.service is disabled: both
#            would listen on 1883)
#
# Swabline itself is expected in /opt/swabline/venv (see docs/image-preparation.md and
# docs/systemd.md). With --root, users are not created (the first-boot script does it on the
# station) and nothing is started; units are enabled offline with 'systemctl --root'.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
root=""
enable=1
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$(cd "${2:?--root needs a folder}" && pwd); shift 2 ;;
    --no-enable) enable=0; shift ;;
    -h|--help) usage ;;
    station|server|broker) role=$1; shift ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[ -n "${role:-}" ] || usage
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or give --root DIR to install into an image" >&2
  exit 1
fi

systemctl_() { if [ -n "$root" ]; then systemctl --root="$root" "$@"; else systemctl "$@"; fi; }

add_user() {  # name, comma-separated supplementary groups (created when missing)
  local name=$1 groups=${2:-}
  if [ -n "$root" ]; then
    echo "install.sh: --root: create user '$name'${groups:+ (groups $groups)} on first boot"
    return
  fi
  local g
  for g in ${groups//,/ }; do getent group "$g" >/dev/null || groupadd --system "$g"; done
  if ! getent passwd "$name" >/dev/null; then
    useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
      ${groups:+--groups "$groups"} --user-group "$name"
  elif [ -n "$groups" ]; then
    usermod --append --groups "$groups" "$name"
  fi
}

units=()
case "$role" in
  station)
    units=(swabline-agent.service swabline-provision.service)
    add_user swabline input,gpio,dialout,video
    install -d -m 0755 "$root/etc/swabline"
    install -d -m 0750 "$root/var/lib/swabline"
    install -d -m 0755 "$root/etc/udev/rules.d"
    install -m 0644 "$repo/firmware_config/udev/99-swabline-scanners.rules" "$root/etc/udev/rules.d/"
    [ -e "$root/etc/swabline/station.template.toml" ] ||
      install -m 0644 "$repo/firmware_config/station.template.toml" "$root/etc/swabline/"
    # sudo's secure_path (Debian, Raspberry Pi OS) has /usr/local/bin, not the venv.
    install -d -m 0755 "$root/usr/local/bin"
    ln -sfn /opt/swabline/venv/bin/swabline "$root/usr/local/bin/swabline"
    ;;
  server)
    units=(swabline-server.service swabline-ingest@.service)
    add_user swabline-server
    install -d -m 0755 "$root/etc/swabline"
    ;;
  broker)
    units=(swabline-mosquitto.service)
    install -d -m 0755 "$root/etc/swabline/broker"
    ;;
esac

install -d -m 0755 "$root/etc/systemd/system"
for unit in "${units[@]}"; do
  install -m 0644 "$here/$unit" "$root/etc/systemd/system/$unit"
done
if [ -z "$root" ]; then
  systemctl daemon-reload
  [ "$role" = station ] && udevadm control --reload && udevadm trigger --subsystem-match=input --subsystem-match=tty
  if [ "$role" = broker ] && systemctl is-enabled --quiet mosquitto.service 2>/dev/null; then
    systemctl disable --now mosquitto.service
  fi
fi
if [ "$enable" = 1 ]; then
  for unit in "${units[@]}"; do
    case "$unit" in *@.service) continue ;; esac  # templates are enabled per instance
    systemctl_ enable "$unit"
  done
fi
echo "install.sh: installed ${units[*]}${root:+ into $root}"
