#!/usr/bin/env bash
# The one command that runs the platform locally (README): installs what is missing, then starts
# Temporal (+ Web UI), PostgreSQL, S3, the worker and the API, and prints their URLs.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
exec node --import tsx deploy/dev/dev.ts
