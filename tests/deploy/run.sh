#!/usr/bin/env bash
# The deployment tier: installs podman & co. from Debian (idempotent), then runs tests/deploy with
# TUPLEHUB_DEPLOY_TIER=1. Needs root (apt-get, rootful podman, debootstrap) and the package index.
# Usage: tests/deploy/run.sh [pytest args]   PYTHON=... picks the interpreter (default: .venv/bin/python)
#        TUPLEHUB_DEPLOY_CACHE=DIR keeps the debootstrap base (default /var/tmp/tuplehub-deploy)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "tests/deploy/run.sh: needs root (apt-get, rootful podman, debootstrap)" >&2; exit 2
fi
packages=(podman buildah debootstrap runc netavark aardvark-dns iptables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
export CONTAINERS_CONF=$PWD/tests/deploy/containers.conf TUPLEHUB_DEPLOY_TIER=1
exec "${PYTHON:-.venv/bin/python}" -m pytest -p no:cacheprovider tests/deploy "$@"
