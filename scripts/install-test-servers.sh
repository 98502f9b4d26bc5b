#!/usr/bin/env bash
# Makes the Python servers the tests run on loopback available: moto's
# DynamoDB server (PyPI moto[server]) and aiosmtpd (the SMTP server of the
# email tests). The system python3 when it already has both, otherwise a
# virtualenv in .build/python. Under CI=true a failure fails the run;
# elsewhere the tests that need them are skipped with a warning.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.build/python
probe="import moto.server, aiosmtpd, cryptography"
if python3 -c "$probe" 2>/dev/null || { [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c "$probe" 2>/dev/null; }; then
  exit 0
fi
echo "Installing moto[server] and aiosmtpd into $venv for the DynamoDB and email tests"
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  scripts/install-packages.sh python3-venv || true
fi
if python3 -m venv "$venv" && "$venv/bin/pip" install --quiet 'moto[server]' aiosmtpd cryptography && "$venv/bin/python3" -c "$probe"; then
  exit 0
fi
if [ "${CI:-}" = "true" ]; then
  echo "error: moto[server] and aiosmtpd could not be installed; the DynamoDB and email tests need them" >&2
  exit 1
fi
echo "warning: moto[server] or aiosmtpd could not be installed; the DynamoDB and email tests are skipped" >&2
exit 0
