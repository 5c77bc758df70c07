"""A fork is durable: its kernel SIGKILLed in the middle of the fork, a new kernel resumes it.

Real kernels (nbclient), a real SIGKILL from outside, the step bodies counted in files outside
the store (``counts/<step>.txt``, see :mod:`support.crash`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import crash as cs
from support.crash import Kernel

pytestmark = pytest.mark.slow


def _run_id(text: str) -> str:
    found = re.search(r"RUN=(r-[0-9a-f]{8})", text)
    assert found, text
    return found.group(1)


def test_kill_in_the_middle_of_a_fork_then_resume(tmp_path: Path) -> None:
    work = tmp_path / "w"
    marker = work / "in_enrich.marker"
    with Kernel(work) as k:
        k.run("%load_ext airun_nb")
        k.run(cs.STEP_LIB)
        k.run(cs.WF_ORDERS)
        first = _run_id(cs.text_of(k.run("print('RUN=' + airun_nb.last_run().run_id)")))
        assert cs.counts(work) == {"enrich": 1, "orders": 1, "rates": 1}
        marker.unlink()
        k.run("os.environ['AIRUN_TEST_SLOW'] = '30'")
        fork_cell = cs.WF_ORDERS.replace(
            "%%workflow orders_report", f"%%workflow orders_report --fork {first} --from enrich"
        )
        with cs.killer(k, when=marker.exists) as kill:
            k.run_expecting_death(fork_cell)
        assert kill["killed"], kill.get("error")
    assert cs.counts(work) == {"enrich": 2, "orders": 1, "rates": 1}

    with Kernel(work) as k2:
        k2.run("%load_ext airun_nb")
        k2.run(cs.STEP_LIB)
        k2.run(cs.WF_ORDERS)  # the same cell again: the interrupted fork resumes
        k2.run(cs.dump_cell())
        check = k2.run(
            "from airun_nb.store.database import Store\n"
            "_r = airun_nb.last_run()\n"
            "_row = Store.open().query_dicts('SELECT * FROM runs WHERE run_id = ?', [_r.run_id])[0]\n"
            "print('FORK', _row['forked_from'], _row['forked_step'], _row['status'])\n"
            "print('WHY', list(airun_nb.why(_r.run_id)['decision']))\n"
            f"print('DIFF', airun_nb.diff({first!r}, _r.run_id)['equal'].tolist())"
        )
    dump = cs.load_dump(work)
    text = cs.text_of(check)
    assert dump["status"] == "completed" and dump["mode"] == "resume"
    assert dump["run_id"] != first
    assert f"FORK {first} enrich completed" in text
    assert "WHY ['replayed', 'replayed', 'ran', 'ran']" in text
    # the resumed fork computed the same outputs with the same code and params
    assert "DIFF [True, True, True, True]" in text
    # orders and rates never ran again: not in the fork, not in its resume
    assert cs.counts(work) == {"enrich": 3, "orders": 1, "rates": 1}
    assert sorted(dump["replayed"]) == ["orders", "rates"]
