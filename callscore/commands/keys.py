"""`callscore keys generate`: an Ed25519 key pair for signing model records."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from registry.keys import generate_keypair

    kid, private, public = generate_keypair(Path(args.out))
    print(f"key id {kid}")
    print(f"private key (trainer/publisher only, mode 0600): {private}")
    print(f"public key (every scorer, the monitor, the report): {public}")
    print(
        f"CALLSCORE_MODEL_SIGNING_KEY_FILE={private}  CALLSCORE_MODEL_TRUSTED_KEYS={public}",
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="model signing keys (Ed25519)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser(
        "generate",
        help="write a new key pair into DIR and print its key id",
        description="Writes model-signing-<key id>.key (private, mode 0600) and "
        "model-signing-<key id>.pub.pem (public) into DIR; never overwrites a file. See "
        "docs/model-channel.md for rotation.",
    )
    generate.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair")
    generate.set_defaults(handler=_cmd_keys_generate)
