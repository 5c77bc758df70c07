"""Signatures on what the store keeps as pickles: stored notebook code and pickled step outputs.

Unpickling runs code, and a store is a file that others may be able to write (a workflow that
got past a policy, a colleague with the shared folder, a copied store). So every pickle the
runtime writes carries an HMAC-SHA256 made with a key that lives outside every store and
workspace: ``~/.config/airun_nb/key`` (``AIRUN_KEY_FILE`` or ``key_file:`` in the settings name
another file), 32 random bytes made on first use, readable by its owner only. A pickle without
a signature, or whose signature does not match, is never unpickled: it is refused with one line
(:class:`SignatureError`). A store moved to another user or machine therefore cannot have its
pickles loaded there unless the key travels with it (copy the key file, mode 0600).

A run copied from another store (``airun pull`` / ``airun push``, :mod:`.transfer`) has its
signatures taken off on the way: each signed pickle is kept, marked as copied
(:func:`unseal`), and refused like an unsigned one until the user says they trust it and it is
signed with their key (:func:`reseal`, ``airun pull --trust-stored-code``). Being copied never
makes code trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from airun_nb.errors import AirunError

MAGIC = b"airun-hmac-sha256:"
COPIED = b"airun-copied-unsigned:"  # a signed pickle copied from another store, signature removed
_DIGEST = hashlib.sha256().digest_size


class SignatureError(AirunError):
    """A stored pickle has no valid signature (planted, tampered with, or signed elsewhere)."""


def key_path() -> Path:
    from airun_nb.settings import file as settings

    return settings.key_file()


def _make(path: Path) -> None:
    """Create the key file atomically (two processes racing get the same key)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces a key another process made first
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def key() -> bytes:
    """The signing key, made on first use; refused when others may read or write it."""
    path = key_path()
    if not path.exists():
        _make(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read the signing key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise SignatureError(
            f"the signing key {path} may be read or written by others: chmod 600 {path}"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise SignatureError(f"the signing key {path} belongs to another user")
    if len(data) < 16:
        raise SignatureError(f"the signing key {path} is too short (make a new one: delete it)")
    return data


def _mac(payload: bytes) -> bytes:
    return hmac.new(key(), payload, hashlib.sha256).digest()


def sign(payload: bytes) -> bytes:
    """``payload`` with its signature in front."""
    return MAGIC + _mac(payload) + payload


def unseal(blob: bytes | bytearray) -> bytes:
    """A signed ``blob`` as it travels to another store: payload kept, signature removed and
    the blob marked as copied (refused by :func:`verify` until :func:`reseal`). A blob that was
    not signed stays as it is (refused as unsigned)."""
    blob = bytes(blob)
    if blob.startswith(MAGIC):
        return COPIED + blob[len(MAGIC) + _DIGEST :]
    return blob


def reseal(blob: bytes | bytearray) -> bytes:
    """A copied blob signed with this user's key, because they said they trust it. Only a blob
    that was signed where it came from (marked by :func:`unseal`) is signed; any other is
    returned as it is."""
    blob = bytes(blob)
    if blob.startswith(COPIED):
        return sign(blob[len(COPIED) :])
    return blob


def verify(blob: bytes | bytearray, what: str) -> bytes:
    """The payload of a signed ``blob``, or :class:`SignatureError` naming ``what``."""
    if isinstance(blob, (bytes, bytearray)) and bytes(blob).startswith(COPIED):
        raise SignatureError(
            f"{what} was copied from another store and is not signed with your key; refused "
            "(if you trust it: airun pull RUN --from STORE --replace --trust-stored-code)"
        )
    if not isinstance(blob, (bytes, bytearray)) or not bytes(blob).startswith(MAGIC):
        raise SignatureError(f"{what} is not signed; refused (it was not stored by this key)")
    blob = bytes(blob)
    mac = blob[len(MAGIC) : len(MAGIC) + _DIGEST]
    payload = blob[len(MAGIC) + _DIGEST :]
    if not hmac.compare_digest(mac, _mac(payload)):
        raise SignatureError(
            f"{what} does not match its signature; refused (tampered with, or signed with "
            f"another key than {key_path()})"
        )
    return payload
