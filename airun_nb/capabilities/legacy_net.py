"""The seed runtime's HTTP ids: net.http.get, net.http.post and net.http.put, with the old
inputs (``url``, ``headers``, ``body``, ``content_type``, ``timeout``) and output keys
(``status_code``, ``body``, ``headers``, ``success``). No undo: a POST or PUT that must be
reversed gives its step a ``compensate``. A connection error fails the step; an answer with an
error status fails it too unless ``allow_errors: true``.

Each is an alias of ``http.request``: the policy sees it as ``http.request`` too, and its
egress checks (metadata and link-local addresses, the policy's ``hosts:``, every redirect)
apply before any byte leaves.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from airun_nb.capabilities.network import _CheckedRedirects, check_destination
from airun_nb.capabilities.registry import CapabilityError, Context, register
from airun_nb.store.redaction import redact


def _request(method: str, args: dict[str, Any], ctx: Context) -> Any:
    cap = f"net.http.{method.lower()}"
    url = args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CapabilityError(f"{cap} needs an http(s) 'url', got {url!r}")
    check_destination(url, ctx)
    headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}
    data = None
    if method != "GET":
        body = args.get("body", "")
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        headers.setdefault("Content-Type", str(args.get("content_type", "application/json")))
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        opener = urllib.request.build_opener(_CheckedRedirects(ctx))
        with opener.open(req, timeout=float(args.get("timeout", 30))) as resp:
            status, text, rh = resp.status, resp.read().decode("utf-8", "replace"), resp.headers
    except urllib.error.HTTPError as exc:
        status, text, rh = exc.code, exc.read().decode("utf-8", "replace"), exc.headers
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CapabilityError(f"{cap} {redact(url)}: {reason}") from None
    ok = 200 <= status < 300
    if not ok and not args.get("allow_errors"):
        raise CapabilityError(f"{cap} {redact(url)} answered {status}")
    return {"status_code": status, "body": text, "headers": dict(rh), "success": ok}


register(
    "net.http.get",
    lambda args, ctx: _request("GET", args, ctx),
    risk="medium",
    description="an HTTP GET",
    plain=False,
    acts_as="http.request",
)
for _verb in ("POST", "PUT"):
    register(
        f"net.http.{_verb.lower()}",
        lambda args, ctx, _v=_verb: _request(_v, args, ctx),
        risk="high",
        description=f"an HTTP {_verb}; no undo (give 'compensate')",
        plain=False,
        acts_as="http.request",
    )
