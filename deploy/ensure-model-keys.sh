#!/bin/sh
# One-shot `keys` service: create the model-signing key pair once (idempotent).
# The private key goes to CALLSCORE_MODEL_SIGNING_KEY_FILE (a volume only the trainer mounts),
# the public key into the directory CALLSCORE_MODEL_TRUSTED_KEYS (mounted read-only by every
# reader). A key that exists is kept; rotation is docs/model-channel.md's runbook.
set -eu
private="${CALLSCORE_MODEL_SIGNING_KEY_FILE:?set CALLSCORE_MODEL_SIGNING_KEY_FILE}"
trusted="${CALLSCORE_MODEL_TRUSTED_KEYS:?set CALLSCORE_MODEL_TRUSTED_KEYS to a directory}"
if [ -s "$private" ]; then
    echo "model signing key exists: $private (public keys in $trusted)"
    exit 0
fi
staging="$(dirname "$private")/new"
rm -rf "$staging"
callscore keys generate --out "$staging"
mv "$staging"/model-signing-*.pub.pem "$trusted"/
mv "$staging"/model-signing-*.key "$private"
rmdir "$staging"
echo "model signing key: $private; public keys: $trusted"
