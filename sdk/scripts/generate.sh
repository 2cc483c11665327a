#!/usr/bin/env bash
# `npm run sdk:generate`: regenerates the SDK from the platform's own /openapi.json (the api role built in process, no
# servers needed): the document snapshot sdk/openapi.json, then sdk/src/generated/ from it. All of it is generated:
# never edit it by hand. test/unit/sdk-generated.test.ts fails when any of it differs from what this writes now.
set -euo pipefail
cd "$(dirname "$0")/../.."
node --import tsx api/cli/openapi-document.ts > sdk/openapi.json.tmp
mv sdk/openapi.json.tmp sdk/openapi.json
node --import tsx sdk/scripts/types.ts
echo "sdk: regenerated sdk/openapi.json and sdk/src/generated/" >&2
