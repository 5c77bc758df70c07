"""The seed runtime's YAML capability specs with an HTTP adapter, registered as capabilities.

``register_spec("capabilities/validated/external/net_finance_yahoo.yaml")`` registers the spec's
``meta.id`` as a capability that calls its ``adapter.config.endpoint_url`` with its ``method``:
a GET sends the step's inputs as the query string, any other method as a JSON body. The request
goes through ``http.request`` (the egress checks and the policy's ``hosts:``), the policy
decides the id like any capability, and the answer's JSON keys are the step's output, with
``status_code`` and ``body``. Specs with credentials (``auth_type`` other than ``none``) or
another adapter are refused in one line: register a function for them.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from airun_nb.capabilities import network
from airun_nb.capabilities.registry import CapabilityError, Context, register
from airun_nb.yamlreader import safe as yamlsafe

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def register_spec(path: str | os.PathLike[str]) -> str:
    """Register the HTTP capability a seed YAML spec describes; returns its id."""
    where = str(path)
    try:
        doc = yamlsafe.load(Path(path).read_text(), where=where)
    except (OSError, yaml.YAMLError, yamlsafe.YamlLimitError) as exc:
        raise CapabilityError(f"{where}: cannot read the capability spec ({exc})") from None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    adapter = doc.get("adapter") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and doc.get("id") and doc.get("handler"):
        raise CapabilityError(
            f"{where}: '{doc['id']}' is served by the Python handler {doc['handler']}; register "
            f"a function with airun_nb.register_capability('{doc['id']}', fn)"
        )
    if not isinstance(meta, dict) or not isinstance(adapter, dict) or not meta.get("id"):
        raise CapabilityError(f"{where}: not a capability spec with 'meta.id' and 'adapter'")
    name = str(meta["id"])
    conf: dict[str, Any] = adapter["config"] if isinstance(adapter.get("config"), dict) else {}
    if adapter.get("type") != "http_api":
        raise CapabilityError(
            f"{where}: adapter '{adapter.get('type')}' is not HTTP; register a function with "
            f"airun_nb.register_capability('{name}', fn)"
        )
    if str(conf.get("auth_type", "none")).lower() != "none":
        raise CapabilityError(
            f"{where}: auth_type '{conf.get('auth_type')}' needs credentials; register a "
            f"function that reads them from secrets with airun_nb.register_capability('{name}', fn)"
        )
    url = conf.get("endpoint_url")
    method = str(conf.get("method", "GET")).upper()
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CapabilityError(f"{where}: adapter.config.endpoint_url must be an http(s) URL")
    if method not in METHODS:
        raise CapabilityError(f"{where}: method must be one of {', '.join(METHODS)}")
    timeout = float(conf.get("timeout", 30))

    def apply(args: dict[str, Any], ctx: Context) -> Any:
        call: dict[str, Any] = {"method": method, "url": url, "timeout": timeout}
        if method == "GET" and args:
            query = urllib.parse.urlencode({k: str(v) for k, v in args.items()})
            call["url"] = f"{url}{'&' if '?' in url else '?'}{query}"
        elif args:
            call["json"] = args
        answer = network._http_apply(call, ctx)
        body = answer.get("json")
        out = dict(body) if isinstance(body, dict) else {}
        return {**out, "status_code": answer["status"], "body": answer["body"], "success": True}

    register(
        name,
        apply,
        risk="medium" if method == "GET" else "high",
        description=f"{method} {url} (from the capability spec {Path(path).name})",
        plain=False,
    )
    return name
