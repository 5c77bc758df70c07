"""Settings: where the store lives, who the user is, and the trusted settings file.

``environment`` reads the ``AIRUN_*`` variables and ``%config``; ``file`` reads ``airun.yaml``.
"""
