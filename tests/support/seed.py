"""The old runtime's real workflow and policy files, kept in ``tests/seed/dialect/``.

They are copies of the AI-First Runtime's files (MIT; its LICENSE is beside them), so the seed
tests run the same on any clone.
"""

from pathlib import Path

SEED_DIALECT = Path(__file__).resolve().parents[1] / "seed" / "dialect"
