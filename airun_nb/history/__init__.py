"""History: every run as pandas DataFrames, SQL over them, and the views people read.

``frames`` (runs, steps, attempts, ...), ``relation`` (DuckDB SQL over the history), ``why``
(why each step replayed or ran), ``diff`` (two runs side by side), ``readmodels`` (what
approvers see), ``steptable`` and ``timeline`` (a run drawn), ``runlist`` (``airun runs``).
"""
