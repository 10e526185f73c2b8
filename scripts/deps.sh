#!/usr/bin/env bash
# Installs what kura needs on Debian 12, and only what is missing. Idempotent.
#
#   scripts/deps.sh run     what building and running kura needs
#   scripts/deps.sh test    the above, plus the real clients the tests drive
#   scripts/deps.sh bench   the above, plus the load generators (wrk, fio, pgbench from postgresql-15)
#                           and the peers measured against (moto, gocryptfs)
set -euo pipefail

purpose="${1:-run}"
# The database engines kura runs (PostgreSQL 15 and MariaDB, with their clients).
engines=(postgresql-15 postgresql-client-15 mariadb-server mariadb-client)
# FUSE, for the encrypted volumes the databases live on.
volumes=(fuse3)
apt_packages=(ca-certificates gcc libc6-dev "${engines[@]}" "${volumes[@]}")
pip_packages=()
case "$purpose" in
  run) ;;
  test) apt_packages+=(awscli); pip_packages+=(boto3 pytest) ;;
  bench) apt_packages+=(awscli wrk fio gocryptfs bc); pip_packages+=(boto3 pytest "moto[server]") ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ((${#pip_packages[@]})); then
  python3 -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi
