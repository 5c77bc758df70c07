"""The store: every run, step, attempt, gate, output and event, behind one boundary.

``database`` is the store handle (the DuckDB file); ``schema`` its tables; ``journal``,
``slots`` and ``fold`` make writes durable before they reach the tables; ``lease`` says who
holds the file; ``owner`` which process runs a run; ``pending`` what the tables hold with the
journal's unfolded records laid over them; ``outputs`` and ``code`` how step values and
notebook functions are kept. Nothing above this package writes SQL on the store's tables.
"""
