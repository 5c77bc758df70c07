"""``airun``: the command line front end (``main``), its lazily loaded command modules
(``travel``: fork, diff, why; ``migrate``: validate, convert, exec) and the group that loads them.
"""
