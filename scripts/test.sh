#!/usr/bin/env bash
# Install hisguard with its test extras (and, as root, the Debian peers the tests talk to),
# then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mapfile -t pkgs < <(grep -v '^\s*#' scripts/debian-packages.txt | awk 'NF{print $1}')
  missing=()
  for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian test peers: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
exec .venv/bin/python -m pytest "$@"
