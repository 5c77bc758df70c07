"""Size limits on text that reaches the store from outside: comments, messages, previews.

A write holds the store's lease, so no single one may carry megabytes: a comment or a gate
message past its limit is refused in one line before the store is touched; a preview (made by
the runtime from a step's arguments) is cut, with a note saying so.
"""

from __future__ import annotations

from airun_nb.spec.approval import ApprovalError

MAX_COMMENT = 4_000  # characters of a decision's comment
MAX_MESSAGE = 4_000  # characters of a gate's message
MAX_PREVIEW = 64_000  # characters of a gate's preview (text and HTML); longer ones are cut


def check_size(value: str | None, limit: int, what: str) -> None:
    """Refuse text over ``limit`` characters before anything is written (one line)."""
    if value is not None and len(value) > limit:
        raise ApprovalError(f"{what} is {len(value)} characters; the limit is {limit}; refused")


def cut(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_PREVIEW:
        return value
    return value[:MAX_PREVIEW] + f"\n... (preview cut at {MAX_PREVIEW} of {len(value)} characters)"
