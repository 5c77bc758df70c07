"""The owner's limits on what a workflow may ask for, and the modules ``call:`` may reach.

Each is read from an ``AIRUN_*`` variable, else from the settings file (``airun.yaml`` or
``[tool.airun_nb]``), else its safe default. A workflow never sets them.

| setting | variable | default | what it caps |
| --- | --- | --- | --- |
| ``call_modules`` | ``AIRUN_CALL_MODULES`` | none | modules a ``call:`` may import (``*``: any) |
| ``foreach_max_items`` | ``AIRUN_FOREACH_MAX_ITEMS`` | 10000 | items of one ``foreach`` |
| ``retry_max_attempts`` | ``AIRUN_RETRY_MAX_ATTEMPTS`` | 20 | attempts of one step's ``retry`` |
| ``template_max_int_bits`` | ``AIRUN_TEMPLATE_MAX_INT_BITS`` | 4096 | integers a template computes |
| ``regex_timeout`` | ``AIRUN_REGEX_TIMEOUT`` | 2 (seconds) | one regular-expression match |
| ``input_max_bytes`` | ``AIRUN_INPUT_MAX_BYTES`` | 8 MB | a file ``validate``/``exec``/``convert`` read |
| ``copy_max_bytes`` | ``AIRUN_COPY_MAX_BYTES`` | 1 GB | one run copied by ``pull``/``push`` |
"""

from __future__ import annotations

import os
from typing import Any

from airun_nb.settings import file as settings_file

DEFAULTS: dict[str, Any] = {
    "foreach_max_items": 10_000,
    "retry_max_attempts": 20,
    "template_max_int_bits": 4096,
    "regex_timeout": 2.0,
    "input_max_bytes": 8 * 1024 * 1024,
    "copy_max_bytes": 1_000_000_000,
}


def _raw(name: str) -> Any:
    env = os.environ.get(f"AIRUN_{name.upper()}")
    if env is not None and env.strip():
        return env.strip()
    try:
        return settings_file.load().get(name)
    except settings_file.SettingsError:
        return None  # a broken settings file is reported where it is read for itself


def _number(name: str) -> float:
    raw = _raw(name)
    default = float(DEFAULTS[name])
    if raw is None or isinstance(raw, bool):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise settings_file.SettingsError(
            f"setting '{name}' must be a positive number, got {raw!r}"
        ) from None
    if value <= 0:
        raise settings_file.SettingsError(f"setting '{name}' must be positive, got {raw!r}")
    return value


def foreach_max_items() -> int:
    return int(_number("foreach_max_items"))


def retry_max_attempts() -> int:
    return int(_number("retry_max_attempts"))


def template_max_int_bits() -> int:
    return int(_number("template_max_int_bits"))


def regex_timeout() -> float:
    return _number("regex_timeout")


def input_max_bytes() -> int:
    return int(_number("input_max_bytes"))


def copy_max_bytes() -> int:
    return int(_number("copy_max_bytes"))


def call_modules() -> tuple[str, ...]:
    """Modules (and packages, with their submodules) a ``call:`` may import; ``*`` is any."""
    raw = _raw("call_modules")
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise settings_file.SettingsError("setting 'call_modules' must be a list of module names")
    return tuple(str(m).strip() for m in items if str(m).strip())


def module_allowed(module: str) -> bool:
    """May a ``call:`` import ``module``? Listed, or inside a listed package."""
    allowed = call_modules()
    return "*" in allowed or any(module == m or module.startswith(m + ".") for m in allowed)
