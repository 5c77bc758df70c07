"""Capabilities: built-in governed actions, each with a declared risk and an automatic undo.

The registry (names, risks, aliases, the policy's view of a step) lives in
:mod:`.registry`; each family of built-in capabilities is a module that registers itself when
imported: :mod:`.files`, :mod:`.network`, :mod:`.shell`, :mod:`.sqlexec`.
"""

from __future__ import annotations

from airun_nb.capabilities import files, legacy, network, shell, sqlexec  # noqa: F401  (register the built-ins)
from airun_nb.capabilities.registry import (
    ALIASES,
    KIND_CAPABILITY,
    KIND_RISK,
    RISKS,
    Capability,
    CapabilityError,
    Context,
    canonical,
    get,
    policy_name,
    register,
    risk_of,
    summarize,
)
from airun_nb.capabilities.sqlexec import SNAPSHOT_MAX_ROWS, touched_tables

__all__ = [
    "ALIASES",
    "KIND_CAPABILITY",
    "KIND_RISK",
    "RISKS",
    "SNAPSHOT_MAX_ROWS",
    "Capability",
    "CapabilityError",
    "Context",
    "canonical",
    "get",
    "policy_name",
    "register",
    "risk_of",
    "summarize",
    "touched_tables",
]
