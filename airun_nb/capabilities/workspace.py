"""The workspace: the one folder file capabilities may touch.

Every path a capability is given is resolved against the workspace root with symlinks followed;
a path that ends up outside the root (``..``, an absolute path elsewhere, a symlink pointing out)
is refused before anything happens. The default root is the working directory (a kernel's is
the notebook's folder); ``AIRUN_WORKSPACE`` or ``workspace:`` in the settings change it.
"""

from __future__ import annotations

import os
from pathlib import Path

from airun_nb.errors import AirunError
from airun_nb.settings import file as settings
from airun_nb.settings.environment import current as settings_now


class SandboxError(AirunError):
    """A path outside the workspace."""

    exit_kind = "security"


class Workspace:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = settings_now().workspace or settings.load().get("workspace") or "."
        self.root = Path(root).expanduser().resolve()

    def path(self, value: object, *, field: str = "path") -> Path:
        """The real path of ``value`` inside the workspace, or :class:`SandboxError`."""
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise SandboxError(f"'{field}' must be a path, got {value!r}")
        raw = Path(value).expanduser()
        candidate = raw if raw.is_absolute() else self.root / raw
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            how = "a symlink that points" if _has_symlink(candidate) else "a path"
            raise SandboxError(
                f"'{field}': {value} is {how} outside the workspace {self.root}; refused"
            )
        return real

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def _has_symlink(path: Path) -> bool:
    p = path
    while True:
        if p.is_symlink():
            return True
        if p.parent == p:
            return False
        p = p.parent
