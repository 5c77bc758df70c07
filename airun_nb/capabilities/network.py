"""The http.request capability.

Egress is checked before any byte leaves, and again for every redirect: link-local addresses
(169.254.0.0/16, fe80::/10, where cloud metadata services answer) and ``fd00:ec2::254`` are
refused, whatever name resolves to them; when the policy lists ``hosts:`` for the principal,
any other host is refused too.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from airun_nb.capabilities.registry import CapabilityError, Context, register
from airun_nb.store.redaction import redact

_METADATA = {ipaddress.ip_address("fd00:ec2::254")}
_METADATA_NAMES = {"metadata.google.internal", "metadata", "instance-data"}


class EgressRefused(CapabilityError):
    """A destination the egress checks refuse."""

    exit_kind = "security"


def _blocked(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in _METADATA


def check_destination(url: str, ctx: Context) -> None:
    """Refuse a URL whose host is link-local / cloud metadata, or outside the policy's hosts."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise CapabilityError(f"http.request: no host in {redact(url)}")
    if ctx.hosts is not None and not any(fnmatch.fnmatchcase(host, h) for h in ctx.hosts):
        raise EgressRefused(
            f"http.request: host {host} is not among the hosts the policy allows "
            f"{ctx.principal or 'this principal'} ({', '.join(ctx.hosts) or 'none'}); refused"
        )
    if host in _METADATA_NAMES:
        raise EgressRefused(f"http.request: {host} is a cloud metadata service; refused")
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return  # urllib reports the name that does not resolve
    for info in infos:
        if _blocked(str(info[4][0])):
            raise EgressRefused(
                f"http.request: {host} is a link-local or cloud metadata address "
                f"({info[4][0]}); refused"
            )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        check_destination(newurl, self.ctx)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_apply(args: dict[str, Any], ctx: Context) -> Any:
    url = args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CapabilityError(f"http.request needs an http(s) 'url', got {url!r}")
    check_destination(url, ctx)
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
        opener = urllib.request.build_opener(_CheckedRedirects(ctx))
        with opener.open(req, timeout=float(args.get("timeout", 30))) as resp:
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
