"""Who is acting: the principal comes from trusted configuration, never from a workflow.

The identity mode is ``identity:`` in the settings (``airun.yaml``, the file named by
``AIRUN_CONFIG`` or ``[tool.airun_nb]``); where the settings do not pin it, ``AIRUN_IDENTITY``;
else ``os``:

* ``os`` (the default): the login of the process (``getpass.getuser()``, else ``uid<N>``);
  ``AIRUN_USER`` is ignored, so on a shared host nobody can claim another name;
* ``env``: ``AIRUN_USER`` (falling back to the login), for containers, CI and single-user
  machines;
* ``jupyterhub``: ``JUPYTERHUB_USER``, which JupyterHub sets for each single-user server.

A settings file that pins the mode wins over the environment, so an administrator can lock a
shared host to ``os``. Acting as someone else (``airun approve --by``, ``approve(by=...)``) needs
a delegation right in the policy: a rule that allows the capability ``gate.decide_as`` to the
acting principal. In ``env`` mode the environment names the user anyway (anyone who can set
``AIRUN_USER`` can be anyone), so a claim there is taken as given: use ``os`` or ``jupyterhub``
wherever identities matter.
"""

from __future__ import annotations

import getpass
import os

from airun_nb.errors import AirunError
from airun_nb.settings import file as settings
from airun_nb.settings.environment import current as settings_now

MODES = ("os", "env", "jupyterhub")
DECIDE_AS = "gate.decide_as"  # the policy's name for the right to decide as another user


class IdentityError(AirunError):
    """The identity cannot be resolved, or a claim to act as someone else was refused."""


def mode() -> str:
    """The identity mode in force: the settings pin it, else ``AIRUN_IDENTITY``, else ``os``."""
    pinned = settings.load().get("identity")
    if pinned is not None:
        value, where = str(pinned), "'identity' in the settings"
    else:
        value, where = settings_now().identity or "os", "AIRUN_IDENTITY"
    if value not in MODES:
        raise IdentityError(f"{where} is {value!r}; use one of {', '.join(MODES)}")
    return value


def os_login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no login name at all
        return f"uid{os.getuid()}"


def current() -> str:
    """The resolved identity of this process."""
    m = mode()
    if m == "env":
        return settings_now().user or os_login()
    if m == "jupyterhub":
        user = os.environ.get("JUPYTERHUB_USER")
        if not user:
            raise IdentityError("identity is 'jupyterhub' but JUPYTERHUB_USER is not set")
        return user
    return os_login()


def may_decide_as(principal: str) -> bool:
    """Does the policy grant ``principal`` the right to decide as other users?"""
    from airun_nb.governance import policy

    try:
        pol = policy.current()
    except AirunError:
        return False
    verdict = pol.evaluate(principal, DECIDE_AS, "high")
    return verdict.decision == "allow" and verdict.rule is not None


def acting_as(claimed: str | None) -> str:
    """The actor to record for a decision: the resolved identity, or ``claimed`` when the
    policy lets the resolved identity decide as others. Otherwise :class:`IdentityError`."""
    me = current()
    if not claimed or claimed == me:
        return me
    if mode() == "env" or may_decide_as(me):
        return claimed
    raise IdentityError(
        f"{me} may not decide as {claimed}: the policy grants no '{DECIDE_AS}' right to {me}"
    )
