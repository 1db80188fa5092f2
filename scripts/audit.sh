#!/usr/bin/env bash
# Dependency audit (SECURITY.md: run pip-audit in CI when it can reach the index). Report-only:
# these machines reach the package index but usually not its vulnerability API, and a CVE
# published tomorrow in a transitive dependency should be read by a person, not silently block.
set -uo pipefail
venv=${1:-.venv}
if ! "$venv/bin/python" -m pip install -q pip-audit >/dev/null 2>&1; then
  echo "audit: pip-audit could not be installed (no index?); dependency audit SKIPPED"
  exit 0
fi
out=$("$venv/bin/pip-audit" --progress-spinner off --skip-editable 2>&1)
if echo "$out" | grep -q "could not be audited"; then
  echo "audit: the vulnerability service is unreachable from here; dependency audit SKIPPED"
elif echo "$out" | grep -qi "found [1-9][0-9]* known vulnerabilit"; then
  echo "################ audit: KNOWN VULNERABILITIES ################"
  echo "$out"
else
  echo "audit: $(echo "$out" | tail -1)"
fi
exit 0
