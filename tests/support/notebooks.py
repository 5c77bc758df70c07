"""Notebooks the tests write: an empty ``.ipynb`` for the ``python3`` kernel."""

from __future__ import annotations

import nbformat


def python_notebook() -> nbformat.NotebookNode:
    """A new notebook whose kernel is ``python3`` (cells are added by the caller)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb
