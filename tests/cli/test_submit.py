"""`airun submit` queues a run that `airun worker` runs; bad input is one line and queues
nothing. Real `airun` processes on a real store file."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.queued import airun, counts, env, rows

WORKFLOW = """\
name: queued_job
params: {n: 1}
steps:
  - id: first
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: first, value: "{{ params.n }}"}
  - id: second
    needs: [first]
    call: support.queued:tick
    with: {run: "{{ run.id }}", step: second, value: "{{ steps.first.output * 10 }}"}
"""


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "job.yaml").write_text(WORKFLOW)
    return tmp_path, env(tmp_path / "s.duckdb", tmp_path / "ledger.txt")


def test_submit_prints_a_run_id_and_a_worker_runs_it_to_success(world) -> None:
    """`airun submit FILE --param n=7` exits 0 printing only the run id; the run is listed as
    queued and nothing ran yet; `airun worker --exit-when-idle` runs it once to completed, with
    the submitted param, and exits 0."""
    folder, e = world
    sub = airun(["submit", "job.yaml", "--param", "n=7"], e, folder)
    assert sub.returncode == 0, sub.stderr
    run_id = sub.stdout.strip()
    assert run_id.startswith("r-") and "\n" not in run_id
    listed = airun(["runs"], e, folder)
    assert run_id in listed.stdout and "queued" in listed.stdout
    assert counts(folder / "ledger.txt") == {}

    done = airun(["worker", "--exit-when-idle"], e, folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"run {run_id} completed" in done.stdout
    assert counts(folder / "ledger.txt") == {(run_id, "first"): 1, (run_id, "second"): 1}
    db = folder / "s.duckdb"
    assert rows(db, f"SELECT status FROM runs WHERE run_id = '{run_id}'") == [("completed",)]
    out = rows(
        db, f"SELECT output_json FROM steps WHERE run_id = '{run_id}' AND step_id = 'second'"
    )
    assert out == [("70",)]
    assert rows(db, "SELECT state, claims FROM queue") == [("done", 1)]


@pytest.mark.parametrize(
    ("args", "file_text", "says"),
    [
        (["submit", "missing.yaml"], None, "missing.yaml"),
        (["submit", "bad.yaml"], "steps: [\n", "bad.yaml: line 2"),
        (
            ["submit", "bad.yaml"],
            "steps:\n  - id: a\n    call: not_defined_anywhere\n",
            "bad.yaml: step 'a'",
        ),
        (["submit", "job.yaml", "--param", "n"], None, "--param takes KEY=VALUE"),
        (["submit", "job.yaml", "--queue", " "], None, "queue"),
    ],
)
def test_bad_input_is_one_line_and_queues_nothing(world, args, file_text, says) -> None:
    """A missing file, invalid YAML, a step that calls nothing that exists, a malformed
    --param and an empty queue name: exit 1, one `error:` line naming what and where, no
    traceback, and no run queued (a worker finds nothing)."""
    folder, e = world
    if file_text is not None:
        (folder / "bad.yaml").write_text(file_text)
    got = airun(args, e, folder)
    assert got.returncode == 1
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], got.stderr
    assert got.stdout == ""
    db = folder / "s.duckdb"
    if db.exists():
        assert rows(db, "SELECT count(*) FROM queue") == [(0,)]
        assert rows(db, "SELECT count(*) FROM runs") == [(0,)]


def test_a_cancelled_queued_run_leaves_the_queue(world) -> None:
    """`airun cancel` on a queued run ends it cancelled and takes it off its queue: a worker
    then finds nothing to run and no step body ever runs."""
    folder, e = world
    run_id = airun(["submit", "job.yaml"], e, folder).stdout.strip()
    cancelled = airun(["cancel", run_id], e, folder)
    assert cancelled.returncode == 0, cancelled.stderr
    idle = airun(["worker", "--exit-when-idle"], e, folder)
    assert "stops after 0 run(s)" in idle.stdout
    db = folder / "s.duckdb"
    assert rows(db, "SELECT status FROM runs") == [("cancelled",)]
    assert rows(db, "SELECT state, error FROM queue") == [("done", "cancelled")]
    assert counts(folder / "ledger.txt") == {}
