"""Fixtures of the security suite (see sec_support)."""

from sec_support import world  # noqa: F401  (the fixture)
