"""The http.request capability."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

from ..auditlog import redact
from .registry import CapabilityError, Context, register


def _http_apply(args: dict[str, Any], ctx: Context) -> Any:
    url = args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CapabilityError(f"http.request needs an http(s) 'url', got {url!r}")
    method = str(args.get("method", "GET")).upper()
    headers = dict(args.get("headers") or {})
    data = None
    if args.get("json") is not None:
        data = json.dumps(args["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif args.get("body") is not None:
        body = args["body"]
        data = body.encode() if isinstance(body, str) else bytes(body)
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=float(args.get("timeout", 30))) as resp:
            status, text, rheaders = (
                resp.status,
                resp.read().decode("utf-8", "replace"),
                dict(resp.headers),
            )
    except urllib.error.HTTPError as exc:
        status, text, rheaders = exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers)
    except urllib.error.URLError as exc:
        raise CapabilityError(f"http.request {method} {redact(url)}: {exc.reason}") from None
    result: dict[str, Any] = {"status": status, "headers": rheaders, "body": text}
    with contextlib.suppress(ValueError):
        result["json"] = json.loads(text)
    if status >= 400 and not args.get("allow_errors"):
        raise CapabilityError(f"http.request {method} {redact(url)} answered {status}")
    return result


register(
    "http.request",
    _http_apply,
    risk="high",
    description="an HTTP request; no undo (give 'compensate')",
    plain=False,
)
