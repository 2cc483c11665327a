#!/usr/bin/env bash
# The one test command (README): installs what is missing, type-checks, lints, runs every jest project
# against real servers started by jest's global set-up, and ends with "N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/setup.sh"
mkdir -p .data
# Only the tests need it. Cold: ~1.5 min (schemathesis and its dependencies from PyPI, pinned in test/contract/).
llmhub_contract_toolchain() { bash test/contract/install.sh >/dev/null; }
llmhub_phase "API contract toolchain (python venv: schemathesis)" llmhub_contract_toolchain
llmhub_phase "typecheck" npx tsc -p tsconfig.json --noEmit
llmhub_phase "lint" npm run --silent lint # eslint . && prettier --check . (package.json)
results=.data/jest-results.json
rm -f "$results"
start=$(date +%s)
set +e
NODE_OPTIONS="${NODE_OPTIONS:-} --experimental-vm-modules --disable-warning=ExperimentalWarning" npx jest --ci --json --outputFile="$results" "$@"
rc=$?
set -e
echo "[setup] tests: $(( $(date +%s) - start )) s" >&2
if [ -f "$results" ]; then
  node -e 'const r=require(require("node:path").resolve(process.argv[1])); console.log(`${r.numPassedTests} passed, ${r.numFailedTests + r.numRuntimeErrorTestSuites} failed`)' "$results"
else
  echo "0 passed, 1 failed"
fi
exit $rc
