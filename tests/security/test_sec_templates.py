"""Template sandbox escapes: each payload sits in an ``fs.write`` ``content:`` of a workflow run
by a principal whose policy denies code, shell and HTTP. Each must fail the step with a
TemplateError line naming the step and the field, write nothing, and run nothing."""

from __future__ import annotations

import pytest
from sec_support import World, run_refused

from airun_nb.errors import TemplateError
from airun_nb.spec import templates

PWNED = "pwned.txt"
PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__()[140].__init__.__globals__['popen']('touch pwned.txt').read() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch pwned.txt').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('touch pwned.txt').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('touch pwned.txt').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch pwned.txt').read() }}",
    "{{ lipsum.__globals__.__builtins__.__import__('os').system('touch pwned.txt') }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "{{ config.items() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ params.__class__.__init__.__globals__ }}",
    "{{ params.update({'x': 1}) }}",
    "{{ steps.__class__.__init__.__globals__ }}",
    "{{ run.__class__ }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{a.__class__}'.format_map({'a': ''}) }}",
    "{{ '%s'|format(''.__class__) }}",
    "{% set x = ''.__class__ %}{{ x }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ os.system('touch pwned.txt') }}",
    "{{ subprocess.run(['touch', 'pwned.txt']) }}",
    "{{ __builtins__.open('pwned.txt', 'w') }}",
    "{{ Path('pwned.txt').write_text('x') }}",
    "{{ touch('pwned.txt') }}",
    "{{ secrets.__class__.__init__.__globals__ }}",
    "{{ range.__self__ }}",
]


def _namespace() -> dict[str, object]:
    import os
    import pathlib
    import subprocess

    def touch(name: str) -> None:
        pathlib.Path(name).write_text("x")

    # What a notebook typically has around: modules, Path, a helper with side effects.
    return {
        "os": os,
        "subprocess": subprocess,
        "Path": pathlib.Path,
        "touch": touch,
        "__builtins__": __builtins__,
    }


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_template_escape_is_refused_and_runs_nothing(
    world: World, payload: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = world.root.parent / "agent.yaml"
    policy.write_text(
        "rules:\n"
        "  - {name: agent-no-code, principals: [agent], capabilities: [python.exec, shell.run,"
        " 'http.*'], decision: deny}\n"
    )
    monkeypatch.setenv("AIRUN_POLICY", str(policy))
    monkeypatch.setenv("AIRUN_USER", "agent")
    snap = world.snapshot()

    content = payload.replace("'", "''")
    _result, error = run_refused(
        world,
        f"name: escape\nsteps:\n  - id: write\n    capability: fs.write\n"
        f"    with: {{path: out.txt, content: '{content}'}}\n",
        namespace=_namespace(),
    )
    assert "step 'write', field 'with.content'" in error
    assert not (world.root / PWNED).exists(), "the payload ran"
    assert not (world.root / "out.txt").exists()
    world.assert_unchanged(snap)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_same_payloads_fail_in_render_with_a_template_error(payload: str) -> None:
    with pytest.raises(TemplateError) as exc:
        templates.render(payload, {"params": {}, **_namespace()}, step="s", field="with.x")
    assert exc.value.message.startswith("step 's', field 'with.x': ")
    assert "Traceback" not in exc.value.message


def test_the_typed_single_template_rule_still_holds() -> None:
    ctx = {"params": {"n": 3, "rows": [1, 2]}, "name": "Ada"}
    assert templates.render("{{ params.n }}", ctx, step="s", field="f") == 3
    assert templates.render("{{ params.rows }}", ctx, step="s", field="f") == [1, 2]
    assert templates.render("n={{ params.n }}", ctx, step="s", field="f") == "n=3"
    assert templates.render("{{ name.upper() }}", ctx, step="s", field="f") == "ADA"
    assert templates.render("{{ '{} {}'.format(name, 1) }}", ctx, step="s", field="f") == "Ada 1"
