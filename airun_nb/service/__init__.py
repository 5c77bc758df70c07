"""The approval service: an authenticated REST API, approval pages and an event stream.

``airun serve`` runs :func:`~airun_nb.service.app.create_app` on uvicorn. Importing this package
imports no web framework: the token and link modules are light, the application is built on
demand.
"""

from __future__ import annotations

from airun_nb.gates.links import approval_link

__all__ = ["approval_link"]
