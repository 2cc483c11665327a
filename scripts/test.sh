#!/usr/bin/env bash
# The one test command (README): installs what is missing, type-checks, lints, runs every jest project
# against real servers started by jest's global set-up, and ends with "N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/setup.sh"
mkdir -p .data
# Only the tests need it. Cold: ~1.5 min (schemathesis and its dependencies from PyPI, pinned in test/contract/).
llmhub_contract_toolchain() { bash test/contract/install.sh >/dev/null; }
llmhub_phase "API contract toolchain (python venv: schemathesis)" llmhub_contract_toolchain
# Only the tests need these two (the chart test, the dashboards test); both are built from the Go module proxy and
# cached. helm: 29 min measured cold with empty Go caches while other Go builds held the 2 cores (load ~30), with the
# prometheus-operator / Gateway API CRDs the chart test installs. prometheus: ~8 CPU-minutes cold, plus ~80 s of
# module downloads.
llmhub_phase "helm and chart CRDs (build or cache)" bash deploy/dev/helm/build.sh
llmhub_phase "prometheus (build or cache)" bash deploy/dev/prometheus/build.sh
# The trace test's receiver, an OpenTelemetry Collector (OTLP receiver, file exporter) from the Go proxy. Cold: ~3
# CPU-minutes to compile (about 2 min on 2 idle cores, plus downloads); 15 min measured with downloads on 2 cores
# loaded 15-25 by other builds.
llmhub_otel_collector() { bash deploy/dev/otel/build.sh >/dev/null; }
llmhub_phase "OpenTelemetry Collector (build or cache)" llmhub_otel_collector
# The real node's tests run the reference model server's image, tagged by a hash of its inputs (the server's sources,
# the image scripts, Node's version), so only a change to those rebuilds it: 118 s here with buildah's base layers
# cached (a cold build adds the debootstrap base and the Node layer, deploy/images/build.sh).
llmhub_model_server_image() { bash deploy/dev/kube/image.sh model-server >/dev/null; }
llmhub_phase "model-server image for the real node (build or cache)" llmhub_model_server_image
# The platform image the chart test installs (test/integration/kube/real-node-chart.test.ts), likewise tagged by a hash
# of its inputs (what `npm run build` compiles, the lockfile, the image scripts): per change of those ~5 min here (tsc,
# the production node_modules pruned from the repository's own, buildah commit and archives), else cached.
llmhub_platform_image() { bash deploy/dev/kube/image.sh platform >/dev/null; }
llmhub_phase "platform image for the chart test (build or cache)" llmhub_platform_image
# The images the real node's Job tests run (test/integration/kube/real-node-jobs.test.ts), once per commit (tag);
# deploy/images/build.sh --missing skips those already built. Cold: the Debian/Node/Python bases and the conversion
# toolchain's wheels first (~10 min measured on this loaded machine); per new commit ~1-2 min.
llmhub_node_job_images() { bash deploy/images/build.sh --missing convert trainer-reference >/dev/null; }
llmhub_phase "images for the real node's Jobs (build or cache)" llmhub_node_job_images
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
