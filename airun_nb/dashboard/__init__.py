"""The terminal dashboard (``airun dashboard``); needs the ``dashboard`` extra (Textual)."""
