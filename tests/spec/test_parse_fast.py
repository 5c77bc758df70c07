"""The fast parsing paths give the very results of the general ones: the plain-YAML reader loads
what PyYAML loads (or steps aside), and plain steps hash as the general path hashes them, so
runs stored before resume after."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from airun_nb.errors import SpecError
from airun_nb.spec import parser as spec
from airun_nb.spec.digest import digest
from airun_nb.yamlreader import plain as yamlplain
from airun_nb.yamlreader import safe as yamlsafe

ROOT = Path(__file__).resolve().parents[2]

# Texts the plain reader must read itself (and read as PyYAML does).
PLAIN = [
    "name: w\nsteps:\n  - id: a\n    call: f\n  - id: b\n    call: g\n    needs: [a]\n",
    "steps:\n- id: a\n  python: |\n    x = 1\n    # not a comment\n\n    y = {'k': 2}\n- id: b\n"
    "  sql: |-\n    SELECT * FROM t\n    WHERE a = 1\n  needs: a\n",
    "a: 1\nb: 1.5\nc: yes\nd: No\ne: null\nf: ~\ng: 0x1F\nh: 1_000\ni: 1:30\nj: .inf\n",
    "retry:\n  attempts: 3\n  on: [ValueError, KeyError]\n  backoff: fixed\n",
    "with: {path: out.txt, mode: w}\nlist: []\nmap: {}\nempty:\nquoted: 'it''s'\n",
    'dq: "a b"\nplain: x = 1  # a comment\nhash: a#b\nurl: http://h/p?q=1\n',
    "- a\n- b: 1\n  c: 2\n-\n- d\n",
    "a:\n  - x\n  - y\nb:\n- z\nc: key:value\n",
    "# a comment\nname: w   \nsteps:\n\n  - id: a\n\n    call: f\n",
    "text: |\n  line\n\n\nafter: 1\n",
]

# Texts it must leave to PyYAML (which may refuse them, with the line).
NOT_PLAIN = [
    "a: &x 1\nb: *x\n",
    "a: !!str 1\n",
    "a: b\n  c\n",  # a multi-line plain scalar
    "a: 1\na: 2\n",  # a duplicate key: PyYAML's path reports it with both lines
    "a: 'x\n  y'\n",
    'a: "x\\ty"\n',
    "a: >\n  folded\n",
    "a: |+\n  kept\n\n",
    "a: |2\n   x\n",
    "a:\n    b: 1\n  c: 2\n",
    "a: |\n    x\n   y\n",
    "a: 2024-01-01\n",
    "? a\n: b\n",
    "---\na: 1\n",
    "a: 1\n...\n",
    "a:\tb\n",
    "a: 1\r\nb: 2\r\n",
    "\ufeffa: 1\n",
    "a: [b, [c]]\n",
    "a: {b: {c: 1}}\n",
    "a: '{{ params.x }}'\nb: {{ params.y }}\n",
    "- - x\n",
    "a: - b\n",
    "<<: {a: 1}\n",
    "a: x\x00\n",
    "a: |\n  \n  x\n",
    "just a scalar\n",
    "",
]


def _pyyaml(text: str) -> object:
    return yaml.load(text, Loader=yaml.CSafeLoader)


@pytest.mark.parametrize("text", PLAIN)
def test_plain_texts_are_read_as_pyyaml_reads_them(text: str) -> None:
    got = yamlplain.load(text)
    assert got is not yamlplain.NOT_PLAIN, "the plain reader stepped aside"
    assert repr(got) == repr(_pyyaml(text))  # same values, types and key order


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_other_yaml_is_left_to_pyyaml(text: str) -> None:
    assert yamlplain.load(text) is yamlplain.NOT_PLAIN


def _doc_texts() -> list[str]:
    texts: list[str] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        texts += re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)
    texts += [p.read_text() for p in sorted((ROOT / "examples").rglob("*.y*ml"))]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):  # their %%workflow cells
        for cell in json.loads(notebook.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and source.startswith("%%workflow"):
                texts.append(source.partition("\n")[2])
    return texts


def test_every_documented_workflow_loads_alike_on_both_paths() -> None:
    texts = _doc_texts()
    read = 0
    for text in texts:
        got = yamlplain.load(text)
        if got is yamlplain.NOT_PLAIN:
            continue
        read += 1
        assert repr(got) == repr(_pyyaml(text)), text
    assert read >= 10  # the plain reader does serve real workflows


def test_a_duplicate_key_is_still_reported_with_both_lines() -> None:
    with pytest.raises(yamlsafe.DuplicateKeyError) as exc:
        yamlsafe.load("name: w\nsteps:\n  - id: a\n    call: f\n    call: g\n")
    assert exc.value.lines == (3, 4)


def _chain(n: int) -> str:
    lines = ["name: big", "steps:"]
    for i in range(1, n + 1):
        lines.append(f"  - id: s{i}\n    call: f" + (f"\n    needs: [s{i - 1}]" if i > 1 else ""))
    return "\n".join(lines) + "\n"


def test_plain_steps_hash_as_the_general_path_hashes_them() -> None:
    text = (
        _chain(3)
        + "  - id: p\n    python: x = steps.s3\n  - id: q\n    sql: SELECT 1\n    needs: s1\n"
        + "  - id: c\n    capability: fs.write\n    needs: [q, q, p]\n"
        + "  - id: r\n    call: f\n    retry: 2\n    with: {a: 1}\n"
        + "  - id: t\n    call: '{{ params.fn }}'\nparams: {fn: f, 2: two}\n"
    )
    wf = spec.parse(text)
    for s in wf.steps:
        assert s.def_hash == digest(s.definition), s.id
    assert wf.spec_hash == digest(
        {"name": wf.name, "steps": [s.definition for s in wf.steps], "params": wf.params}
    )
    assert wf.step("c").needs == ["q", "p"]
    assert wf.step("t").templated and not wf.step("s2").templated
    assert wf.step("p").needs == ["s3"]  # read from its code


def test_a_plain_step_with_a_bad_body_gets_the_general_error() -> None:
    with pytest.raises(SpecError, match="'call' names a notebook function"):
        spec.parse("name: w\nsteps:\n  - id: a\n    call: ''\n")
    with pytest.raises(SpecError, match=r"line 3.*each step needs an 'id'"):
        spec.parse("name: w\nsteps:\n  - id: 'a b'\n    call: f\n")


def test_a_workflow_of_30000_steps_parses() -> None:
    wf = spec.parse(_chain(30_000))  # 240,000 YAML nodes: over the alias budget, no alias
    assert len(wf.steps) == 30_000 and wf.step("s30000").needs == ["s29999"]


_ATOMS = [
    *("a", "b c", "on", "yes", "No", "null", "~", "1", "-1", "0x1F", "1.5", "1:30", "x:y"),
    *("a: b", "a #c", "a#b", "'q'", "'it''s'", '"d q"', "'a' # c", "x  # c", "[a, b]", "[]"),
    *("{}", "{k: v}", "{k: 'v, w'}", "['a,b', c]", "[a, ]", "[x:y]", "{a: b, c: 1}", "|", "|-"),
    *(">", "'", '"', "- x", "*a", "&a x", "!!str x", "SELECT * FROM t", "{{ x }}", "a:", "=", "é"),
]
_KEYS = ["a", "b", "on", "yes", "null", "k_1", "x-y", "Y"]


def _random_doc(rnd: random.Random, depth: int, indent: int, out: list[str]) -> None:
    for _ in range(rnd.randint(1, 4)):
        sp, key, r = " " * indent, rnd.choice(_KEYS), rnd.random()
        if r < 0.5 or depth > 3:
            out.append(f"{sp}{key}: {rnd.choice(_ATOMS)}")
            if out[-1].endswith(("|", "|-")):
                inner = indent + rnd.choice([1, 2, 4])
                for _ in range(rnd.randint(0, 3)):
                    out.append(rnd.choice([" " * inner + rnd.choice(_ATOMS), "", sp + "# c"]))
        elif r < 0.7:
            out.append(f"{sp}{key}:")
            _random_doc(rnd, depth + 1, indent + rnd.choice([2, 4]), out)
        elif r < 0.9:
            out.append(f"{sp}{key}:")
            ind = indent + rnd.choice([0, 2])
            for _ in range(rnd.randint(1, 3)):
                out.append(" " * ind + "- " + rnd.choice([rnd.choice(_ATOMS), f"{key}: x"]))
                if rnd.random() < 0.4:
                    out.append(" " * (ind + 2) + rnd.choice(_KEYS) + ": " + rnd.choice(_ATOMS))
        else:
            out.append(rnd.choice(["", "# comment", sp + "  " + rnd.choice(_ATOMS)]))


def test_random_yaml_reads_alike_on_both_paths_or_steps_aside() -> None:
    rnd = random.Random(7)
    read = 0
    for _ in range(3000):
        lines: list[str] = []
        _random_doc(rnd, 0, 0, lines)
        text = "\n".join(lines) + rnd.choice(["\n", ""])
        got = yamlplain.load(text)
        if got is yamlplain.NOT_PLAIN:
            continue
        read += 1
        try:
            want: object = _pyyaml(text)
        except yaml.YAMLError as exc:  # the plain reader must never accept what PyYAML refuses
            want = exc
        assert repr(got) == repr(want), text
    assert read > 300


def test_a_plain_step_is_the_step_the_dataclass_builds() -> None:
    from airun_nb.spec import plainsteps as specparts
    from airun_nb.spec.model import StepSpec

    one, _ = specparts.plain_step({"id": "a", "call": "f", "needs": ["b"]})  # type: ignore[misc]
    two, _ = specparts.plain_step({"id": "c", "call": "f"})  # type: ignore[misc]
    built = StepSpec(
        id="a",
        kind="call",
        body="f",
        needs=["b"],
        retry=specparts.NO_RETRY,
        definition=one.definition,
        def_hash=one.def_hash,
        templated=False,
    )
    assert one == built and list(vars(one).items()) == list(vars(built).items())
    assert one.with_ is not two.with_ and one.bindings is not two.bindings  # fresh, not shared


def test_steps_listed_before_what_they_need_parse_and_cycles_are_still_found() -> None:
    wf = spec.parse("name: w\nsteps:\n  - {id: b, call: f, needs: [a]}\n  - {id: a, call: f}\n")
    assert [s.id for s in wf.steps] == ["b", "a"] and wf.step("b").needs == ["a"]
    with pytest.raises(SpecError, match=r"dependency cycle: (a -> b -> a|b -> a -> b)"):
        spec.parse(
            "name: w\nsteps:\n  - {id: a, call: f, needs: [b]}\n  - {id: b, call: f, needs: a}\n"
        )


def test_many_stars_in_plain_text_are_not_taken_for_aliases() -> None:
    text = "name: w\nsteps:\n" + "".join(
        f"  - id: q{i}\n    sql: SELECT * FROM t{i}\n" for i in range(yamlsafe.MAX_ALIASES + 5)
    )
    wf = spec.parse(text)
    assert wf.step("q3").body == "SELECT * FROM t3"
