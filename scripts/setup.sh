#!/usr/bin/env bash
# Install what nodenetd's demo and test suite need on a fresh Debian 12 (run as root):
# the apt packages in scripts/apt-packages.txt and a Python virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.setup-stamp
recipe_hash=$(cat scripts/apt-packages.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$recipe_hash" ]]; then
    exit 0
fi
mapfile -t packages < <(grep -v '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$')
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
pip_log=$(mktemp)
if ! .venv/bin/pip install -q -e ".[test,systemd]" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    exit 1
fi
rm -f "$pip_log"
echo "$recipe_hash" > "$stamp"
echo "setup: ready (.venv)"
