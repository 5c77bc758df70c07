"""``python -m airun_nb``: the same as the ``airun`` command."""

from airun_nb.cli.main import main

main()
