"""Settings: where the store lives, who the user is, and the trusted settings file.

``environment`` reads the ``AIRUN_*`` variables and ``%config``; ``file`` reads ``airun.yaml``.
"""

from airun_nb.settings import file as _file  # noqa: F401  (the settings file's ``db:``)
