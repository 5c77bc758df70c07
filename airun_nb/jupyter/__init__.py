"""The Jupyter edge of airun_nb: magics, the live run table and (later) gate widgets.

Nothing outside this package imports IPython or ipywidgets.
"""
