"""``python -m airun_nb``: the same as the ``airun`` command."""

from .cli import main

main()
