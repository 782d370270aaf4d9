#!/usr/bin/env bash
# The whole test suite: lint, the host lane (unit + network-namespace tests), the kernel lab
# lane (tests marked `kernel`, in a VM booted from Debian's stock kernel), then the system
# lab lane (the Debian package and the Ansible role on Debian 12 with systemd as PID 1).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
status=0
echo "== ruff"
.venv/bin/ruff check nodenetd tests bench scripts || status=1
echo "== host lane: pytest -m 'not kernel'"
mkdir -p .lab-cache
rm -f .lab-cache/host-lane.xml .lab-cache/kernel-lane.xml .lab-cache/system-lane.xml
.venv/bin/python -m pytest -m "not kernel" --junitxml=.lab-cache/host-lane.xml "$@"
rc=$?
if ((rc == 5)); then
    echo "WARNING: pytest collected no tests for the host lane"
elif ((rc != 0)); then
    status=1
fi
echo "== kernel lab lane"
.venv/bin/python -m tests.kernel_lab.run --junitxml .lab-cache/kernel-lane.xml || status=1
echo "== system lab lane"
.venv/bin/python -m tests.system_lab.run --junitxml .lab-cache/system-lane.xml || status=1
.venv/bin/python -m scripts.junit_total .lab-cache/host-lane.xml .lab-cache/kernel-lane.xml \
    .lab-cache/system-lane.xml
exit $status
