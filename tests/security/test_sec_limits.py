"""Resource limits: YAML alias bombs, huge comments and messages, long previews, big texts
through redaction."""

from __future__ import annotations

import pytest
from sec_support import World, run_refused

import airun_nb
from airun_nb import Workflow
from airun_nb.errors import SpecError
from airun_nb.governance import policy
from airun_nb.store.database import Store
from airun_nb.yamlreader import safe as yamlsafe


def _bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_workflow_is_refused_in_one_line(world: World) -> None:
    before = world.store_bytes()
    text = "name: bomb\n" + _bomb() + "steps:\n  - id: a\n    python: x = 1\n"
    assert len(text) < 700  # a few hundred bytes standing for 10^9 nodes
    with pytest.raises(SpecError) as exc:
        Workflow.from_yaml(text)
    assert "expands to more than" in exc.value.message
    assert "\n" not in exc.value.message
    world.assert_store_untouched(before)


def test_a_self_referencing_alias_is_refused() -> None:
    with pytest.raises(yamlsafe.YamlLimitError):
        yamlsafe.load("a: &x [1, *x]\n")


def test_too_many_aliases_are_refused() -> None:
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * (yamlsafe.MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(yamlsafe.YamlLimitError, match="aliases"):
        yamlsafe.load(text)


def test_a_long_document_with_an_alias_is_not_refused_for_its_own_nodes() -> None:
    # 250,000 nodes written out (over MAX_NODES) and one alias that adds a single node
    text = "a: &x 1\nb: *x\nitems: [" + ", ".join(["0"] * 250_000) + "]\n"
    doc = yamlsafe.load(text)
    assert doc["b"] == 1 and len(doc["items"]) == 250_000


def test_a_bomb_inside_a_long_document_is_still_refused() -> None:
    # the document's own 250,000 nodes give the aliases no more room than MAX_NODES
    text = _bomb(7) + "items: [" + ", ".join(["0"] * 250_000) + "]\n"
    with pytest.raises(yamlsafe.YamlLimitError, match="through aliases"):
        yamlsafe.load(text)


def test_a_document_over_the_byte_limit_is_refused() -> None:
    text = "a: [" + ", ".join(["0"] * (yamlsafe.MAX_BYTES // 3 + 1)) + "]\n"
    with pytest.raises(yamlsafe.YamlLimitError, match="bytes"):
        yamlsafe.load(text)


def test_ordinary_aliases_still_load() -> None:
    assert yamlsafe.load("base: &b {retry: 2}\nstep: *b\n") == {
        "base": {"retry": 2},
        "step": {"retry": 2},
    }


def test_a_policy_file_bomb_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "p.yaml"
    path.write_text(_bomb() + "rules: []\n")
    with pytest.raises(policy.PolicyError, match="expands to more than"):
        policy.load_file(path)


def _open_gate(world: World) -> str:
    r = Workflow.from_yaml("name: g\nsteps:\n  - id: review\n    approval: {message: ok?}\n").run(
        raise_on_failure=False
    )
    return r.run_id


def test_a_huge_approval_comment_is_refused_before_the_store_is_held(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _open_gate(world)
    monkeypatch.setenv("AIRUN_USER", "bob")
    store = Store.open(world.store)
    before = store.query_dicts("SELECT * FROM approvals WHERE run_id = ?", [run_id])
    store.release()
    with pytest.raises(airun_nb.ApprovalError, match="the comment is 1000000 characters"):
        airun_nb.approve(run_id, "review", comment="x" * 1_000_000)
    store = Store.open(world.store)
    assert store.query_dicts("SELECT * FROM approvals WHERE run_id = ?", [run_id]) == before
    store.release()


def test_a_huge_gate_message_is_refused(world: World) -> None:
    snap = world.snapshot()
    _r, error = run_refused(
        world,
        "name: g\nparams: {m: " + "y" * 5000 + "}\nsteps:\n  - id: review\n"
        "    approval: {message: '{{ params.m }}'}\n",
    )
    assert "limit is 4000" in error
    world.assert_unchanged(snap)


def test_a_long_preview_is_cut_with_a_note(world: World) -> None:
    r = Workflow.from_yaml(
        "name: g\nparams: {big: " + "z" * 70_000 + "}\nsteps:\n  - id: review\n"
        "    approval: {message: ok?, show: '{{ params.big }}'}\n"
    ).run(raise_on_failure=False)
    store = Store.open(world.store)
    (text,) = store.query("SELECT preview_text FROM approvals WHERE run_id = ?", [r.run_id])[0]
    store.release()
    assert len(text) < 65_000 and "preview cut at 64000" in text


def test_a_128_kb_write_goes_through_redaction_whole(world: World) -> None:
    content = ("abcdefghij" * 13_000) + " https://u:pw@h/ "
    Workflow.from_yaml(
        "name: big\nsteps:\n  - id: w\n    capability: fs.write\n"
        "    with: {path: big.txt, content: '{{ params.c }}'}\n"
        "params: {c: x}\n"
    ).run(params={"c": content})
    assert (world.root / "big.txt").read_text() == content
    assert "u:pw@" not in airun_nb.audit().to_string()


def test_airun_validate_refuses_a_bomb_file_in_one_line(world: World) -> None:
    from sec_support import airun, one_line

    path = world.root / "bomb.yaml"
    path.write_text("name: bomb\n" + _bomb() + "steps:\n  - id: a\n    python: x = 1\n")
    done = airun("validate", str(path))
    assert done.returncode != 0
    assert "expands to more than" in one_line(done.stdout + done.stderr)
