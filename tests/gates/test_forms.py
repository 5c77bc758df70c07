"""Typed forms, options and quorum of approval gates: parse-time checks, the CLI's ``--set`` and
``--option``, the gate's output in later steps, and the wording after a decision.

Real DuckDB stores in tmp_path; ``airun`` runs in subprocesses the way the console script runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import airun_nb
from airun_nb import ApprovalError, SpecError, Workflow
from airun_nb.gates import form as forms
from airun_nb.result import RunResult
from airun_nb.spec.approval import Field, FormError
from support import AIRUN


@pytest.fixture
def db(store_db: Any) -> Any:
    """Every test here runs on both backends: the DuckDB file and a PostgreSQL database."""
    return store_db


def record(what: str) -> None:
    with open("effects.log", "a") as fh:
        fh.write(what + "\n")


def effects() -> list[str]:
    p = Path("effects.log")
    return p.read_text().splitlines() if p.exists() else []


NS = {"record": record}


def spec(approval: dict[str, Any], name: str = "release") -> str:
    doc = {
        "name": name,
        "steps": [
            {"id": "review", "approval": {"message": "Release?", **approval}},
            {
                "id": "ship",
                "needs": ["review"],
                "when": "{{ steps.review.output.option == 'ship' }}",
                "call": "record",
                "with": {
                    "what": "ship {{ steps.review.output.form.amount }} on "
                    "{{ steps.review.output.form.day }} by {{ steps.review.output.by | join(',') }}"
                },
            },
            {
                "id": "hold",
                "needs": ["review"],
                "when": "{{ steps.review.output.option == 'hold' }}",
                "call": "record",
                "with": {"what": "hold"},
            },
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


FORM = {
    "fields": {
        "amount": {"type": "integer", "required": True},
        "day": {"type": "date", "default": "2026-12-24"},
        "urgent": "boolean",
        "region": {"type": "choice", "choices": ["eu", "us"]},
    },
    "options": ["ship", "hold"],
}


def run(text: str, db: Path, **kw: Any) -> RunResult:
    return Workflow.from_yaml(text).run(db=db, namespace=NS, raise_on_failure=False, **kw)


def cli(*args: str, user: str = "bob") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRUN_USER": user, "AIRUN_IDENTITY": "env"}
    return subprocess.run([*AIRUN, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(autouse=True)
def _env(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AIRUN_APPROVAL", "AIRUN_APPROVAL_MODE", "AIRUN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRUN_USER", "alice")
    monkeypatch.setenv("AIRUN_IDENTITY", "env")
    monkeypatch.chdir(tmp_path)


# -- the gate's settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approval", "says"),
    [
        ({"fields": {"amount": "money"}}, "field 'amount': type must be one of"),
        ({"fields": {"region": {"type": "choice"}}}, "a choice field needs 'choices'"),
        ({"fields": {"n": {"type": "integer", "default": "many"}}}, "default must be a whole"),
        ({"fields": {"two words": "string"}}, "field name 'two words' must be a name"),
        ({"fields": {"x": {"type": "string", "colour": 1}}}, "field 'x': unknown key 'colour'"),
        ({"options": "ship"}, "'options' must be a list of names"),
        ({"options": ["ship", "ship"]}, "names an option twice"),
        ({"quorum": 0}, "'quorum' must be a whole number from 1 to 100"),
        ({"require": {"role:lead": "one"}}, "'require.role:lead' must be a whole number"),
    ],
)
def test_a_bad_form_option_or_quorum_is_refused_when_the_workflow_is_read(
    approval: dict[str, Any], says: str
) -> None:
    """Mistakes in ``fields``/``options``/``quorum``/``require`` are one line naming the step,
    before anything runs."""
    with pytest.raises(SpecError) as bad:
        Workflow.from_yaml(spec(approval))
    assert says in str(bad.value) and str(bad.value).startswith("line 4, steps[0].approval: ")
    assert "\n" not in str(bad.value)


def test_the_one_check_types_values_from_text_and_json() -> None:
    """Text from a form or the CLI and JSON values become the field's type; others are refused."""
    assert forms.coerce(Field("n", "integer"), "42") == 42
    assert forms.coerce(Field("n", "integer"), 42.0) == 42
    assert forms.coerce(Field("x", "number"), "1e3") == 1000.0
    assert forms.coerce(Field("b", "boolean"), "yes") is True
    assert forms.coerce(Field("d", "date"), "2026-02-28") == "2026-02-28"
    assert forms.coerce(Field("c", "choice", choices=[1, 2]), "2") == 2
    for f, value in [
        (Field("n", "integer"), "4.5"),
        (Field("n", "integer"), True),
        (Field("x", "number"), "nan"),
        (Field("b", "boolean"), "maybe"),
        (Field("d", "date"), "2026-02-30"),
        (Field("c", "choice", choices=["a"]), "b"),
        (Field("s", "string"), ["a"]),
    ]:
        with pytest.raises(FormError):
            forms.coerce(f, value)


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_approve_with_set_and_option_continues_on_the_chosen_branch(db: Path) -> None:
    """``airun approve RUN review --set amount=7 --option ship``: the typed form and option are
    the gate's output; resuming runs the ``ship`` branch with them and skips ``hold``."""
    first = run(spec(FORM), db)
    assert first.status == "waiting"
    listed = cli("approvals", "--db", str(db))
    assert "--set amount=..." in listed.stdout and "--option ship|hold" in listed.stdout
    assert "amount (integer, required)" in listed.stdout
    done = cli("approve", first.run_id, "review", "--set", "amount=7", "--option", "ship")
    assert done.returncode == 0, done.stderr
    assert "with option ship" in done.stdout and f"airun resume {first.run_id}" in done.stdout
    row = airun_nb.approvals(first.run_id, db=db).iloc[0]
    assert (row["status"], row["option"]) == ("approved", "ship")
    assert json.loads(row["form"]) == {
        "amount": 7,
        "day": "2026-12-24",
        "urgent": None,
        "region": None,
    }
    assert run(spec(FORM), db, resume=first.run_id).status == "completed"
    assert effects() == ["ship 7 on 2026-12-24 by bob"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--set", "amount=seven", "--option", "ship"), "field 'amount' must be a whole number"),
        (("--option", "ship"), "field 'amount' is required (a whole number)"),
        (("--set", "amount=7"), "choose an option: ship, hold"),
        (("--set", "amount", "--option", "ship"), "--set takes NAME=VALUE"),
        (
            ("--set", "region=asia", "--set", "amount=1", "--option", "ship"),
            "must be one of eu, us",
        ),
    ],
)
def test_cli_bad_values_are_one_line_exit_1_and_record_nothing(
    db: Path, args: tuple[str, ...], says: str
) -> None:
    first = run(spec(FORM), db)
    done = cli("approve", first.run_id, "review", *args)
    assert done.returncode == 1
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    row = airun_nb.approvals(first.run_id, db=db).iloc[0]
    assert row["status"] == "open" and pd.isna(row["votes"])


def test_cli_quorum_counts_votes_and_says_how_many_are_missing(db: Path) -> None:
    """With ``quorum: 2`` the first CLI approval says the gate stays open (1 of 2); the same
    person again is refused; the second person's approval closes the gate."""
    first = run(spec({**FORM, "quorum": 2}), db)
    one = cli("approve", first.run_id, "review", "--set", "amount=3", "--option", "hold")
    assert one.returncode == 0 and "the gate stays open: 1 of 2 approvals" in one.stdout
    twice = cli("approve", first.run_id, "review", "--option", "hold")
    assert twice.returncode == 1 and "bob already approved" in twice.stderr
    launcher = cli("approve", first.run_id, "review", user="alice")
    assert launcher.returncode == 1 and "four-eyes" in launcher.stderr
    two = cli("approve", first.run_id, "review", user="carol")
    assert two.returncode == 0 and "with option hold" in two.stdout
    assert run(spec(FORM), db, resume=first.run_id).status == "completed"
    assert effects() == ["hold"]
    out = airun_nb.steps(first.run_id, db=db).set_index("step_id").loc["review"]
    assert out["status"] == "completed"


def test_a_retried_cli_request_returns_the_first_answer(db: Path) -> None:
    """The same ``--request-id`` twice: both succeed and one vote is recorded."""
    first = run(spec({"options": ["ship", "hold"]}), db)
    args = ("approve", first.run_id, "review", "--option", "ship", "--request-id", "r-77")
    assert cli(*args).returncode == 0
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    row = airun_nb.approvals(first.run_id, db=db).iloc[0]
    assert len(json.loads(row["votes"])) == 1


def test_rejection_wording_is_the_decision_not_a_failure(db: Path) -> None:
    """A rejected gate's step says "Rejected by bob: <comment>" and the run is rolled back; the
    approvals list says who rejected and why."""
    first = run(spec({}), db)
    done = cli("reject", first.run_id, "review", "-m", "not this week")
    assert done.returncode == 0 and "the run rolls back" in done.stdout
    result = run(spec({}), db, resume=first.run_id)
    assert result.status == "rolled_back"
    listed = cli("approvals", "--all", "--db", str(db))
    assert "Rejected by bob: not this week" in listed.stdout


def test_python_api_takes_form_and_option(db: Path) -> None:
    """``airun_nb.approve(..., form=, option=)`` is the same one check as every channel."""
    first = run(spec(FORM), db)
    with pytest.raises(ApprovalError) as bad:
        airun_nb.approve(
            first.run_id, "review", by="bob", db=db, form={"amount": "x"}, option="ship"
        )
    assert "field 'amount' must be a whole number" in str(bad.value)
    out = airun_nb.approve(
        first.run_id, "review", by="bob", db=db, form={"amount": 2, "urgent": "no"}, option="ship"
    )
    assert out["decision"] == "approved" and out["form"]["urgent"] is False
