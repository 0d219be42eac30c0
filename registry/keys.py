"""Ed25519 keys of the model channel: the publisher's private key, every reader's trusted set.

The trainer (and `callscore models promote`) hold the private key; scorers, the monitor and the
report hold only public keys, so a compromised reader cannot sign a model. A key is named by its
key id (the first 16 hex of the sha256 of the raw public key), which every record carries, so
several public keys can be trusted at once while the private key is rotated.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import CallscoreError, MissingSecretError
from core.settings import Settings

KEY_ID_HEX = 16
PublicKeys = dict[str, Ed25519PublicKey]  # by key id


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (no window with wider permissions); never
    overwrite an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CallscoreError(f"{path} exists: refusing to overwrite a key file") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)  # the umask may have narrowed or widened nothing; make it exact


def generate_keypair(out_dir: Path) -> tuple[str, Path, Path]:
    """Write a new key pair into `out_dir`: (key id, private key path, public key path)."""
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"model-signing-{kid}.key"
    public_path = out_dir / f"model-signing-{kid}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise CallscoreError(f"{path} exists: refusing to overwrite a key file")
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    _write_new(public_path, public_pem, 0o644)
    return kid, private_path, public_path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CallscoreError(f"cannot read the {what} {path}: {exc.strerror}") from None


def load_signing_key(settings: Settings) -> tuple[str, Ed25519PrivateKey]:
    """The publisher's private key and its key id; a clear error when it is missing or wrong."""
    path = settings.model_signing_key_file
    if path is None:
        raise MissingSecretError(
            "no model signing key: set CALLSCORE_MODEL_SIGNING_KEY_FILE to the PEM file of an "
            "Ed25519 private key (`callscore keys generate --out DIR` writes one)"
        )
    try:
        key = serialization.load_pem_private_key(_read(path, "model signing key"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CallscoreError(
            f"CALLSCORE_MODEL_SIGNING_KEY_FILE {path}: not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CallscoreError(
            f"CALLSCORE_MODEL_SIGNING_KEY_FILE {path}: an Ed25519 key is required, "
            f"got {type(key).__name__}"
        )
    return key_id(key.public_key()), key


def _trusted_files(spec: str) -> list[Path]:
    files: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part)
        if path.is_dir():
            files.extend(sorted(path.glob("*.pem")))
        else:
            files.append(path)
    return files


def trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every public key a model record may be signed with, by key id (never empty)."""
    spec = settings.model_trusted_keys
    if not spec or not spec.strip():
        raise MissingSecretError(
            "no trusted model keys: set CALLSCORE_MODEL_TRUSTED_KEYS to the publisher's public "
            "key PEM file(s) or a directory of them (`callscore keys generate` writes a pair)"
        )
    keys: dict[str, Ed25519PublicKey] = {}
    for path in _trusted_files(spec):
        data = _read(path, "trusted model key")
        if b"PRIVATE KEY" in data:
            raise CallscoreError(
                f"CALLSCORE_MODEL_TRUSTED_KEYS: {path} is a private key; readers must hold only "
                "public keys"
            )
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise CallscoreError(
                f"CALLSCORE_MODEL_TRUSTED_KEYS: {path} is not a PEM public key"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise CallscoreError(
                f"CALLSCORE_MODEL_TRUSTED_KEYS: {path} is not an Ed25519 key ({type(key).__name__})"
            )
        keys[key_id(key)] = key
    if not keys:
        raise CallscoreError(f"CALLSCORE_MODEL_TRUSTED_KEYS {spec!r}: no *.pem public key found")
    return keys
