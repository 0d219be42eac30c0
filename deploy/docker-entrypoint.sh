#!/bin/sh
# The image's entrypoint: `callscore "$@"`. A compose secret mounted as /run/secrets/CALLSCORE_<NAME>
# (e.g. CALLSCORE_API_TOKEN) becomes that variable for this process only, so a secret stays a
# file: never in docker-compose.yml, the image or `docker inspect`. SECRETS_DIR: tests only.
set -eu
for secret in "${SECRETS_DIR:-/run/secrets}"/CALLSCORE_*; do
    [ -f "$secret" ] || continue
    export "$(basename "$secret")=$(cat "$secret")"
done
exec callscore "$@"
