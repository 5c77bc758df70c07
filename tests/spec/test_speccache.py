"""The parsed-spec cache: hits in this process and in the store, misses on any change."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import airun_nb
from airun_nb import SpecError, Workflow
from airun_nb.spec import cache as speccache
from airun_nb.store.database import Store


def chain(n: int, name: str = "big") -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(1, n + 1):
        lines.append(f"  - id: s{i}\n    call: f" + (f"\n    needs: [s{i - 1}]" if i > 1 else ""))
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def _fresh_cache():
    speccache.forget()
    before = dict(speccache.stats)
    yield lambda: {k: speccache.stats[k] - before[k] for k in before}
    speccache.forget()


def test_same_text_hits_in_process_and_any_change_misses(_fresh_cache) -> None:
    text = chain(3)
    first = Workflow.from_yaml(text).spec
    again = Workflow.from_yaml(text).spec
    assert again is first
    assert _fresh_cache() == {"memory": 1, "store": 0, "parsed": 1}
    edited = Workflow.from_yaml(text.replace("call: f", "call: g", 1)).spec
    assert edited.steps[0].body != first.steps[0].body
    renamed = Workflow.from_yaml(text, name="other").spec
    assert renamed.name == "other" and first.name == "big"
    shifted = Workflow.from_yaml(text, line_offset=1).spec
    assert shifted is not first
    assert _fresh_cache()["parsed"] == 4


def test_bad_text_is_never_cached(_fresh_cache) -> None:
    bad = "name: x\nsteps:\n  - id: a\n    cal: f\n"
    for _ in range(2):
        with pytest.raises(SpecError):
            Workflow.from_yaml(bad)
    assert _fresh_cache()["memory"] == 0


def test_a_big_text_is_found_in_the_store_by_a_fresh_process(db: Path, _fresh_cache) -> None:
    text = chain(400)
    assert len(text) >= speccache.STORE_MIN_CHARS
    wf = Workflow.from_yaml(text, db=db)  # no store yet: parsed, nothing written
    wf.run(db=db, namespace={"f": lambda: 1})
    Workflow.from_yaml(text, db=db)  # in memory now
    speccache.forget()
    Workflow.from_yaml(text, db=db)  # parsed again, and stored this time
    assert _fresh_cache() == {"memory": 1, "store": 0, "parsed": 2}
    Store.open(db).release()
    code = (
        "import json, sys; from airun_nb import Workflow; from airun_nb.spec import cache as speccache; "
        "wf = Workflow.from_yaml(sys.stdin.read(), db=sys.argv[1]); "
        "r = wf.run(db=sys.argv[1], namespace={'f': lambda: 1}); "
        "print(json.dumps({**speccache.stats, 'steps': len(wf.spec.steps), 'status': r.status}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        input=text,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {
        "memory": 0,
        "store": 1,
        "parsed": 0,
        "steps": 400,
        "status": "completed",
    }


def test_a_cache_entry_from_another_parser_or_a_foreign_pickle_is_a_miss(
    db: Path, _fresh_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = chain(400)
    Workflow.from_yaml(text).run(db=db, namespace={"f": lambda: 1})
    key = speccache.cache_key(text)
    store = Store.open(db)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with store.session("test") as con:
        con.execute(
            "INSERT OR REPLACE INTO spec_cache VALUES (?, now()::timestamp, ?)",
            [key, pickle.dumps(Evil())],
        )
    speccache.forget()
    spec = Workflow.from_yaml(text, db=db).spec  # refused by the unpickler: parsed instead
    assert len(spec.steps) == 400
    assert _fresh_cache() == {"memory": 0, "store": 0, "parsed": 2}
    # the bad entry was replaced by a good one
    speccache.forget()
    assert Workflow.from_yaml(text, db=db).spec.name == "big"
    assert _fresh_cache()["store"] == 1
    # a changed parser (any edit of its source files) has other keys: the entry is not read
    monkeypatch.setattr(speccache, "parser_id", lambda: "another parser")
    assert speccache.cache_key(text) != key
    speccache.forget()
    Workflow.from_yaml(text, db=db)
    assert _fresh_cache()["parsed"] == 3
    store.release()
    con = duckdb.connect(str(db))
    assert con.execute("SELECT count(*) FROM spec_cache").fetchone() == (2,)
    con.close()
    assert airun_nb.runs(db=db)["status"].tolist() == ["completed"]
