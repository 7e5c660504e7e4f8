#!/usr/bin/env bash
# Offline install for isolated hospital networks: build a wheelhouse (every wheel hisguard needs)
# on a connected machine, carry the directory over, install from it with one command.
#
#   scripts/wheelhouse.sh build [DIR] [EXTRAS]
#       Linux wheelhouse for this machine's Python version and architecture (build it on the same
#       distribution/Python as the target, e.g. Debian 12 + Python 3.11). Default DIR: dist/wheelhouse.
#   scripts/wheelhouse.sh build-windows [DIR] [EXTRAS] [PYVER]
#       Windows x64 wheelhouse, built here without Windows: hisguard's own wheel plus
#         pip download --platform win_amd64 --python-version PYVER --only-binary=:all: …
#       and pywin32 for the Windows service. PYVER defaults to 3.11.
#   scripts/wheelhouse.sh install DIR [VENV]
#       Same as DIR/install.sh [VENV].
#
# On the isolated server, one command:
#   Linux:    sh wheelhouse/install.sh [/opt/hisguard/venv]
#   Windows:  wheelhouse\install.cmd [C:\hisguard\venv]
# then `hisguard-agent service install -c CONFIG` (and `hisguard-agent doctor -c CONFIG`).
#
# EXTRAS: comma-separated optional parts; default "db,snmp" (an agent with every probe).
# A server wheelhouse: EXTRAS = server. Extra pip arguments for the build: WHEELHOUSE_PIP_ARGS.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
read -r -a PIP_ARGS <<<"${WHEELHOUSE_PIP_ARGS:-}"

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# Build from a clean copy of the sources: nothing is written into the checkout.
source_copy() {
  local dest
  dest="$(mktemp -d)"
  tar -C "$ROOT" --exclude=./.venv --exclude=./var --exclude=./.git --exclude=./build --exclude=./dist \
      --exclude='*.egg-info' --exclude=__pycache__ --exclude=./bench/.venv-agent -cf - . | tar -C "$dest" -xf -
  echo "$dest"
}

requirement() {  # "hisguard" or "hisguard[a,b]"
  if [ -n "$1" ]; then echo "hisguard[$1]"; else echo "hisguard"; fi
}

write_linux_installer() {
  local dir="$1" req="$2"
  cat >"$dir/install.sh" <<EOF
#!/bin/sh
# Install hisguard from this wheelhouse, without network: sh install.sh [VENV]
set -eu
HERE="\$(cd "\$(dirname "\$0")" && pwd)"
VENV="\${1:-/opt/hisguard/venv}"
PY="\${PYTHON:-python3}"
"\$PY" -m venv "\$VENV"
"\$VENV/bin/python" -m pip install --no-index --find-links "\$HERE" --disable-pip-version-check -q '$req'
echo "installed into \$VENV: \$("\$VENV/bin/hisguard-agent" --version)"
EOF
  chmod +x "$dir/install.sh"
}

write_windows_installer() {
  local dir="$1" req="$2"
  cat >"$dir/install.cmd" <<EOF
@echo off
rem Install hisguard from this wheelhouse, without network: install.cmd [VENV]
setlocal
set VENV=%~1
if "%VENV%"=="" set VENV=C:\\hisguard\\venv
py -3 -m venv "%VENV%" || python -m venv "%VENV%" || exit /b 1
"%VENV%\\Scripts\\python.exe" -m pip install --no-index --find-links "%~dp0." --disable-pip-version-check "$req" pywin32 || exit /b 1
"%VENV%\\Scripts\\hisguard-agent.exe" --version
EOF
}

cmd="${1:-}"
case "$cmd" in
  build)
    DIR="$(mkdir -p "${2:-$ROOT/dist/wheelhouse}" && cd "${2:-$ROOT/dist/wheelhouse}" && pwd)"
    EXTRAS="${3-db,snmp}"
    SRC="$(source_copy)"
    trap 'rm -rf "$SRC"' EXIT
    "$PY" -m pip wheel --disable-pip-version-check -q "${PIP_ARGS[@]}" --wheel-dir "$DIR" "$SRC${EXTRAS:+[$EXTRAS]}"
    write_linux_installer "$DIR" "$(requirement "$EXTRAS")"
    echo "wheelhouse: $DIR ($(find "$DIR" -name '*.whl' | wc -l) wheels); install with: sh $DIR/install.sh [VENV]"
    ;;
  build-windows)
    DIR="$(mkdir -p "${2:-$ROOT/dist/wheelhouse-win}" && cd "${2:-$ROOT/dist/wheelhouse-win}" && pwd)"
    EXTRAS="${3-db,snmp}"
    PYVER="${4:-3.11}"
    SRC="$(source_copy)"
    trap 'rm -rf "$SRC"' EXIT
    "$PY" -m pip wheel --disable-pip-version-check -q "${PIP_ARGS[@]}" --no-deps --wheel-dir "$DIR" "$SRC"
    WHEEL="$(ls "$DIR"/hisguard-*.whl | head -n1)"
    "$PY" -m pip download --disable-pip-version-check -q "${PIP_ARGS[@]}" --dest "$DIR" --only-binary=:all: \
        --platform win_amd64 --python-version "$PYVER" --implementation cp \
        "$WHEEL${EXTRAS:+[$EXTRAS]}" pywin32
    write_windows_installer "$DIR" "$(requirement "$EXTRAS")"
    echo "Windows wheelhouse: $DIR; on the server run: install.cmd [VENV]"
    ;;
  install)
    [ -n "${2:-}" ] || usage
    exec sh "$2/install.sh" "${3:-/opt/hisguard/venv}"
    ;;
  *) usage ;;
esac
