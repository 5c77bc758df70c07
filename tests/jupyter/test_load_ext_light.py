"""`%load_ext airun_nb` imports nothing heavy; the magics bring in what they need on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
before = set(sys.modules)
shell.run_line_magic("load_ext", "airun_nb")
loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
shell.run_cell_magic("workflow", "--db " + sys.argv[1], "name: light\\nsteps:\\n  - id: a\\n    python: 'result = 41 + 1'\\n")
import airun_nb
print("PROBE " + json.dumps({"loaded": loaded, "output": airun_nb.last_run()["a"]}))
"""


def test_load_ext_imports_nothing_heavy_and_the_magics_still_run(tmp_path: Path) -> None:
    """Loading the extension in a real IPython shell imports neither pandas, numpy, pyarrow,
    DuckDB, YAML, ipywidgets nor the engine's runner; the first %%workflow cell then runs a
    workflow to completion in that same shell (its imports come with it)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "s.duckdb")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    _, _, report = done.stdout.rpartition("PROBE ")
    assert report, done.stdout + done.stderr
    got = json.loads(report)
    heavy = {"pandas", "numpy", "pyarrow", "duckdb", "yaml", "ipywidgets", "jinja2"}
    assert set(got["loaded"]) & heavy == set()
    assert got["output"] == 42
