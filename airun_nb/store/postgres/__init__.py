"""The team store on a PostgreSQL server: the second backend behind :mod:`airun_nb.store.backend`.

``schema`` builds the tables of :data:`airun_nb.store.schema.TABLES` on the server and migrates
them under an advisory lock; ``backend`` is the store handle (:class:`PostgresStore`): writes in
one transaction per commit, named reads in SQL, history read through Arrow into DuckDB.
``errors`` turns a driver's exception into one line. psycopg is imported only when a
``postgresql://`` URL is opened (the ``airun_nb[postgres]`` extra).
"""
