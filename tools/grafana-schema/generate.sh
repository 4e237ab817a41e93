#!/usr/bin/env bash
# Regenerates dashboard.schema.json (JSON Schema, draft-07) from the TypeScript types of
# the pinned @grafana/schema npm package, using the pinned ts-json-schema-generator.
# Needs node >= 20 and npm; the network is used only by `npm ci` (the npm registry).
# Deterministic: running it again on the same package-lock.json gives a byte-identical file,
# so CI can run it and `git diff --exit-code dashboard.schema.json`.
set -euo pipefail
cd "$(dirname "$0")"

npm ci --no-audit --no-fund --loglevel=error >/dev/null

out=dashboard.schema.json
tmp=$(mktemp "${TMPDIR:-/tmp}/dashboard.schema.XXXXXX")
trap 'rm -f "$tmp"' EXIT

# Defaults of the generator that matter here: objects without an index signature get
# "additionalProperties": false, properties are sorted, JSDoc comments become descriptions.
./node_modules/.bin/ts-json-schema-generator \
    --tsconfig tsconfig.json \
    --path dashboard.ts \
    --type Dashboard \
    --out "$tmp"

# Make sure the file ends with exactly one newline whatever the generator does.
printf '%s\n' "$(cat "$tmp")" > "$out"
echo "wrote $(pwd)/$out ($(wc -c < "$out") bytes)"
