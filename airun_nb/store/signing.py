"""Signatures on what the store keeps as pickles: stored notebook code and pickled step outputs.

Unpickling runs code, and a store is a file that others may be able to write (a workflow that
got past a policy, a colleague with the shared folder, a copied store). So every pickle the
runtime writes carries an HMAC-SHA256 made with a key that lives outside every store and
workspace: ``~/.config/airun_nb/key`` (``AIRUN_KEY_FILE`` or ``key_file:`` in the settings name
another file), 32 random bytes made on first use, readable by its owner only. A pickle without
a signature, or whose signature does not match, is never unpickled: it is refused with one line
(:class:`SignatureError`). A store moved to another user or machine therefore cannot have its
pickles loaded there unless the key travels with it (copy the key file, mode 0600).
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


def verify(blob: bytes | bytearray, what: str) -> bytes:
    """The payload of a signed ``blob``, or :class:`SignatureError` naming ``what``."""
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
