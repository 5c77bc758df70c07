"""Redaction: what never reaches the store, a log or a screen: secret values, credentials.

Values registered as secrets are replaced wherever they appear; keys that name credentials
(``password``, ``token``...) have their values replaced; free text is searched for
credential-looking values. Every journal record passes :func:`scrub` before it is written, so
the store never holds a secret, whoever wrote the record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_KEYS = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth(orization)?|credential|"
    r"private[_-]?key|access[_-]?key|secret[_-]?key|session|cookie|signature|sig)s?$"
    r"|^(key|pwd)$|_pwd$|secret|password|passphrase",
    re.IGNORECASE,
)
# Each pattern starts with a literal (so the regex engine skips ahead to it) or a word boundary,
# and scans forward once: redaction is linear in the length of the text.
_VALUE_PATTERNS = [
    # credentials inside URLs: https://user:pass@host
    (re.compile(r"://(?P<user>[^/\s:@]{1,256}):[^@\s/]+(?=@)"), r"://\g<user>:***"),
    # secret-looking query parameters
    (
        re.compile(
            r"(?P<pre>[?&](?:access_token|token|api_key|apikey|key|secret|password|sig|signature|"
            r"auth|code)=)[^&#\s\"']+",
            re.I,
        ),
        r"\g<pre>***",
    ),
    # bearer / basic authorization values
    (
        re.compile(r"(?P<pre>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=\-]{8,}", re.I),
        r"\g<pre>***",
    ),
    # well-known token shapes
    (re.compile(r"(?:gh[pos]|github_pat|glpat|xox[abpr])[-_][A-Za-z0-9_\-]{10,}"), REDACTED),
    (re.compile(r"AKIA[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"sk-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+"), REDACTED),
]
# A cheap test per pattern (substrings of the lower-cased text, found at C speed): text without
# any of them cannot match the pattern, which is then not run at all.
_MARKERS: list[tuple[str, ...]] = [
    ("://",),
    ("token=", "key=", "secret=", "password=", "sig=", "signature=", "auth=", "code="),
    ("bearer", "basic", "token"),
    ("ghp", "gho", "ghs", "github_pat", "glpat", "xox"),
    ("akia",),
    ("sk-",),
    ("eyj",),
]
# Every text a key or value pattern can match holds one of these (case aside): text without any
# is left as it is, after one scan at C speed. The words are those every secret key name holds.
_KEY_WORDS = ("pass", "secret", "token", "key", "auth", "credential", "session", "cookie")
_ANY_VALUE_MARKER = re.compile("|".join(re.escape(m) for ms in _MARKERS for m in ms), re.I)
_ANY_MARKER = re.compile(
    "|".join(
        re.escape(m) for m in (*_KEY_WORDS, "sig", "pwd", *(m for ms in _MARKERS for m in ms))
    ),
    re.I,
)

# Secret values resolved in this process (the ``secrets`` namespace of templates): redacted by
# value wherever they would be written.
_secret_values: list[str] = []  # longest first
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary text


def register_secret(value: str) -> None:
    """Redact ``value`` from now on, wherever this process writes or shows it."""
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value not in _secret_values:
        _secret_values.append(value)
        _secret_values.sort(key=len, reverse=True)


def forget_secrets() -> None:
    """Forget every registered secret value (tests; a new session)."""
    _secret_values.clear()


def _replace_secrets(text: str) -> str:
    for v in _secret_values:
        if v in text:
            text = text.replace(v, REDACTED)
    return text


def redact_text(text: str) -> str:
    """``text`` with secret values and credential-looking values replaced by ``***``."""
    if _secret_values:
        text = _replace_secrets(text)
    if not _ANY_VALUE_MARKER.search(text):
        return text
    lowered = text.lower()
    for (regex, repl), markers in zip(_VALUE_PATTERNS, _MARKERS, strict=True):
        if any(m in lowered for m in markers):
            text = regex.sub(repl, text)
            lowered = text.lower()
    return text


def redact_secrets(value: Any) -> Any:
    """``value`` with registered secret values replaced, inside strings at any depth (other
    objects are left as they are)."""
    if not _secret_values:
        return value
    if isinstance(value, str):
        return _replace_secrets(value)
    if isinstance(value, Mapping):
        return {k: redact_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_secrets(v) for v in value)
    return value


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(key))


def redact_keys(value: Any) -> Any:
    """``value`` with the values of secret-named keys replaced; other objects (DataFrames...)
    are left as they are (for previews)."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) else redact_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_keys(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` with secrets replaced by ``***``."""
    if key is not None and _SECRET_KEYS.search(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(repr(value))


def redact_json(text: str) -> str:
    """A JSON text with secret-named keys and secret-looking values redacted; other text has
    its values redacted."""
    if not _secret_values and "\\" not in text and not _ANY_MARKER.search(text):
        return text  # no key or value in it can be a secret's (no escape hides one)
    try:
        doc = json.loads(text)
    except ValueError:
        return redact_text(text)
    if not isinstance(doc, (dict, list)):
        return redact_text(text)
    return json.dumps(redact(doc), default=str)


# Fields of journal records that carry free text from outside (error lines, stderr, comments,
# previews, event details): credential-looking values are redacted there. Registered secret
# values are redacted from every string of every record.
SCRUB_FIELDS: dict[str, tuple[str, ...]] = {
    "step": ("error", "comp_error", "reason"),
    "att": ("error", "traceback"),
    "run": ("error",),
    "ev": ("detail",),
    "gate": ("message", "preview_text", "preview_html", "comment"),
    "audit": ("arguments", "result"),
}


_JSON_FIELDS = ("detail", "arguments", "result")


def scrub(rec: dict[str, Any]) -> dict[str, Any]:
    """The redactor every journal record passes through before it is written (the store calls
    it in ``record``/``record_many``): secret values everywhere, credential-looking values in
    the free-text fields of :data:`SCRUB_FIELDS`."""
    if not _secret_values and _clean(rec, str(rec.get("t"))):
        return rec  # nothing any pattern could match: the hot path of a step's records
    fields = SCRUB_FIELDS.get(str(rec.get("t")), ())
    texts = [f for f in fields if isinstance(rec.get(f), str) and rec[f]]
    out = redact_secrets(rec) if _secret_values else dict(rec)
    for f in texts:
        v = out.get(f)
        if isinstance(v, str):
            out[f] = redact_json(v) if f in _JSON_FIELDS else redact_text(v)
    if isinstance(out.get("att"), dict):
        out["att"] = scrub({**out["att"], "t": "att"})
        out["att"].pop("t", None)
    return out


def _clean(rec: Mapping[str, Any], kind: str) -> bool:
    """Whether scrubbing ``rec`` would leave it as it is (no secret values registered): none of
    its free-text fields holds a marker that a pattern needs (see :func:`redact_text` and
    :func:`redact_json`)."""
    for f in SCRUB_FIELDS.get(kind, ()):
        v = rec.get(f)
        if isinstance(v, str) and v:
            if f in _JSON_FIELDS:
                if "\\" in v or _ANY_MARKER.search(v):
                    return False
            elif _ANY_VALUE_MARKER.search(v):
                return False
    att = rec.get("att")
    return not isinstance(att, dict) or _clean(att, "att")
