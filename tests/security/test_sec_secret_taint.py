"""Secrets that stay secret: ``secrets.NAME`` reads only names the owner declares; a value
rendered from a secret is redacted whole wherever it lands, however a template transformed it;
a step result echoing a declared secret is redacted in the audit trail and its export; a
notebook global holding a credential is never shown by ``why()`` or kept in the store."""

from __future__ import annotations

import base64
import json

import pytest
from sec_support import World, airun, run_refused

import airun_nb
from airun_nb import Workflow
from airun_nb.store.database import Store

TOKEN = "tok-5e4d3c2b1a-owner-only"


def _write(content: str) -> str:
    return (
        "name: taint\nsteps:\n  - id: w\n    capability: fs.write\n"
        f"    with: {{path: out.txt, content: {json.dumps(content)}}}\n"
    )


@pytest.mark.parametrize("name", ["HOME", "AWS_SECRET_ACCESS_KEY", "API_TOKEN"])
def test_an_undeclared_secret_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Any environment variable the owner did not list under ``secrets:`` is refused in one
    line naming it; nothing is written and its value is nowhere in the store."""
    monkeypatch.setenv(name, TOKEN)
    monkeypatch.setenv("AIRUN_SECRETS", "SOMETHING_ELSE")
    snap = world.snapshot()
    _result, error = run_refused(world, _write("{{ secrets." + name + " }}"))
    assert f"secret '{name}' is not declared" in error
    world.assert_unchanged(snap)
    world.assert_absent(TOKEN)


def test_a_secret_declared_in_the_settings_file_is_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``secrets: [API_TOKEN]`` in airun.yaml declares the name (the honest path)."""
    (world.root / "airun.yaml").write_text("secrets: [API_TOKEN]\n")
    monkeypatch.setenv("API_TOKEN", TOKEN)
    Workflow.from_yaml(_write("{{ secrets.API_TOKEN }}")).run()
    assert (world.root / "out.txt").read_text() == TOKEN
    world.assert_absent(TOKEN)


TRANSFORMS = [
    ("{{ secrets.API_TOKEN | reverse }}", TOKEN[::-1]),
    ("{{ secrets.API_TOKEN.encode().hex() }}", TOKEN.encode().hex()),
    ("{{ secrets.API_TOKEN[3:] }}", TOKEN[3:]),
    ("{{ secrets.API_TOKEN[::2] }}", TOKEN[::2]),
    ("{{ secrets.API_TOKEN | upper }}", TOKEN.upper()),
    ("{{ secrets.API_TOKEN | list | join('.') }}", ".".join(TOKEN)),
    ("x{{ secrets.API_TOKEN | replace('-', '') }}y", "x" + TOKEN.replace("-", "") + "y"),
    ("{{ secrets.API_TOKEN | urlencode }}", TOKEN),
]


@pytest.mark.parametrize(("template", "clear"), TRANSFORMS)
def test_a_transformed_secret_is_redacted_whole(
    world: World, monkeypatch: pytest.MonkeyPatch, template: str, clear: str
) -> None:
    """The effect gets the transformed value; the store (step rows, outputs, audit, journal,
    the file's bytes) has neither it nor any long piece of it."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("AIRUN_SECRETS", "API_TOKEN")
    wf = Workflow.from_yaml(
        _write(template) + "  - id: echo\n    needs: [w]\n    capability: shell.run\n"
        "    with: {command: [cat, out.txt]}\n"
    )
    wf.run()
    assert (world.root / "out.txt").read_text() == clear
    world.assert_absent(clear)
    world.assert_absent(clear[4:])


def test_a_failing_template_that_reads_a_secret_withholds_its_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking up a reversed secret in a mapping would put it in the error line ("no element
    '...'"): the message is withheld."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("AIRUN_SECRETS", "API_TOKEN")
    _result, error = run_refused(world, _write("{{ {}[secrets.API_TOKEN | reverse | join] }}"))
    assert "withheld" in error
    world.assert_absent(TOKEN[::-1])
    world.assert_absent(TOKEN)


def test_a_step_result_echoing_a_declared_secret_is_redacted_in_the_audit_and_its_export(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that prints a declared secret it was never given by a template: the audit
    ``result`` column and ``airun audit --format jsonl`` show ``***``."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("AIRUN_SECRETS", "API_TOKEN")
    r = Workflow.from_yaml(
        "name: echoes\nsteps:\n  - id: env\n    capability: shell.run\n"
        "    with: {command: [printenv, API_TOKEN]}\n"
    ).run()
    assert r.status == "completed"
    audit = airun_nb.audit()
    results = " ".join(str(v) for v in audit["result"].tolist())
    assert "***" in results and TOKEN not in results
    done = airun("audit", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    assert "env" in done.stdout and TOKEN not in done.stdout
    world.assert_absent(TOKEN)


def test_why_never_shows_a_notebook_global_holding_a_credential(world: World) -> None:
    """A global ``API_KEY = "sk-..."`` read by a step, changed between runs: why() says it
    changed without showing either value, and the stored fingerprint keeps neither."""
    old = "sk-proj-" + "A" * 40
    new = "sk-proj-" + "B" * 40
    text = "name: uses_key\nsteps:\n  - id: s\n    python: result = len(API_KEY) + len(label)\n"
    Workflow.from_yaml(text).run(namespace={"API_KEY": old, "label": "x"})
    r = Workflow.from_yaml(text).run(namespace={"API_KEY": new, "label": "y"})
    frame = airun_nb.why(r.run_id)
    shown = frame.to_string() + repr(frame["changed"].tolist())
    assert "global API_KEY changed" in shown
    assert "global label 'x' → 'y'" in shown  # ordinary globals are still shown
    for value in (old, new, base64.b64encode(old.encode()).decode()):
        assert value not in shown
        world.assert_absent(value)
    store = Store.open(world.store)
    assert "AAAAAAAAAA" not in repr(store.query("SELECT fingerprint FROM steps"))
    store.release()
