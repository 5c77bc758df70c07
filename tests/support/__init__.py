"""Small pieces several test modules share."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: step bodies imported from here stay light
    import nbformat

# Every environment variable airun_nb reads: tests clear them so the host's settings never leak in.
ENV_VARS = (
    "AIRUN_WORKSPACE",
    "AIRUN_POLICY",
    "AIRUN_CONFIG",
    "AIRUN_CRASH_AT",
    "AIRUN_APPROVAL",
    "AIRUN_APPROVAL_MODE",
    "AIRUN_SNAPSHOT_MAX_ROWS",
    "AIRUN_LOCK_TIMEOUT",
    "AIRUN_USER",
)

# The `airun` command, run the way the console script runs it (with this interpreter).
AIRUN = [
    sys.executable,
    "-c",
    "import sys; from airun_nb.cli.main import main; sys.argv[0] = 'airun'; main()",
]


def cell_text(cell: nbformat.NotebookNode) -> str:
    """Stdout, stderr, plain-text results and error lines of an executed cell."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif o.get("output_type") in ("display_data", "execute_result"):
            out.append(o.get("data", {}).get("text/plain", ""))
        elif o.get("output_type") == "error":
            out.append(f"{o.get('ename')}: {o.get('evalue')}")
    return "\n".join(out)
