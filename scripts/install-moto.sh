#!/usr/bin/env bash
# Makes moto's DynamoDB server (PyPI moto[server]) available to the tests:
# the system python3 when it already has it, otherwise a virtualenv in
# .build/moto. Under CI=true a failure fails the run; elsewhere the DynamoDB
# tests are skipped with a warning.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.build/moto
if python3 -c "import moto.server" 2>/dev/null || { [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c "import moto.server" 2>/dev/null; }; then
  exit 0
fi
echo "Installing moto[server] into $venv for the DynamoDB tests"
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  scripts/install-packages.sh python3-venv || true
fi
if python3 -m venv "$venv" && "$venv/bin/pip" install --quiet 'moto[server]' && "$venv/bin/python3" -c "import moto.server"; then
  exit 0
fi
if [ "${CI:-}" = "true" ]; then
  echo "error: moto[server] could not be installed; the DynamoDB tests need it" >&2
  exit 1
fi
echo "warning: moto[server] could not be installed; the DynamoDB tests are skipped" >&2
exit 0
