"""Bad files and arguments to the CLI: one line and the documented exit code, never a
traceback, a hang or a run of out-of-memory. `validate` and `exec` exit 10 on a file they cannot
use; `exec`'s exit code comes from what the run recorded, not from words in its error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sec_support import World, airun, one_line


def _fifo(world: World) -> Path:
    path = world.root.parent / "pipe.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", ["validate", "exec"])
@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "undecodable", "huge"])
def test_a_file_that_is_no_workflow_exits_10(world: World, command: str, source: str) -> None:
    """A device, a FIFO, bytes that are not UTF-8 or a file above input_max_bytes: exit 10 with
    the reason, without reading it whole (a FIFO with no writer would hang the read)."""
    if source == "/dev/zero":
        path = Path("/dev/zero")
    elif source == "fifo":
        path = _fifo(world)
    else:
        path = world.root.parent / f"{source}.yaml"
        path.write_bytes(b"name: x\n# \xff\xfe\n" if source == "undecodable" else b"#" * 4096)
    env = {"AIRUN_INPUT_MAX_BYTES": "1000"} if source == "huge" else {}
    out = airun(command, str(path), env=env)
    assert out.returncode == 10, out
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    reason = {
        "/dev/zero": "not a regular file",
        "fifo": "not a regular file",
        "undecodable": "not UTF-8 text",
        "huge": "input_max_bytes",
    }[source]
    # validate prints one line for the file; exec its status line, and one error line
    assert reason in one_line(out.stderr if command == "exec" else text)
    if command == "exec":
        assert one_line(out.stderr).startswith("error: ")


def test_convert_refuses_a_device_in_one_line(world: World) -> None:
    """`airun convert /dev/zero` ends at once with one line."""
    out = airun("convert", "/dev/zero")
    assert out.returncode != 0
    assert "not a regular file" in one_line(out.stderr)


def test_validate_exits_10_on_invalid_yaml(world: World) -> None:
    """A file that is not YAML is a validation error (10), not a crash (1)."""
    bad = world.root.parent / "bad.yaml"
    bad.write_text("steps: [\n")
    out = airun("validate", str(bad))
    assert out.returncode == 10, out
    assert "invalid YAML" in one_line(out.stdout + out.stderr)


def test_yaml_tags_in_an_input_are_one_line(world: World) -> None:
    """`--input x=!!python/object/apply:os.system [...]` never builds an object: an input is
    text unless the workflow types it, so the tag stays text (a typed param refuses it in one
    line); nothing runs."""
    flow = world.root.parent / "flow.yaml"
    flow.write_text("name: f\nsteps:\n  - {id: a, sql: SELECT 1}\n")
    pwned = world.outside / "pwned"
    out = airun(
        "exec", str(flow), "--input", f"x=!!python/object/apply:os.system ['touch {pwned}']"
    )
    assert out.returncode == 0, out  # the run completed; x was the text it was given
    assert "Traceback" not in out.stderr
    assert not pwned.exists()
    typed = world.root.parent / "typed.yaml"
    typed.write_text("name: t\nparams: {x: 1}\nsteps:\n  - {id: a, sql: SELECT 1}\n")
    out = airun(
        "exec", str(typed), "--input", f"x=!!python/object/apply:os.system ['touch {pwned}']"
    )
    assert out.returncode == 10, out
    assert "--input x" in one_line(out.stderr)
    assert not pwned.exists()


def test_yaml_tags_in_a_fork_param_are_one_line(world: World) -> None:
    """`airun fork RUN --from STEP -p x=!!python/name:os.system` is one line, nothing forked."""
    out = airun("fork", world.history_run, "--from", "one", "-p", "x=!!python/name:os.system")
    assert out.returncode != 0
    assert "--param x" in one_line(out.stderr)


def test_exec_exit_code_is_not_read_from_the_error_words(world: World) -> None:
    """A step whose own error says 'denied by the policy ... refused ... timed out' does not
    make `exec` report a denial (11), a sandbox refusal (12) or a timeout (15): the run failed
    and rolled back, which is the old bridge's 20 with status rolled_back."""
    flow = world.root.parent / "liar.yaml"
    flow.write_text(
        "name: liar\nsteps:\n  - id: a\n    python: |\n"
        "      raise ValueError('denied by the policy; refused; outside the workspace; timed out')\n"
    )
    out = airun("exec", str(flow), "--json")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["status"] == "rolled_back"
    assert out.returncode == 20, out


def test_exec_reports_a_real_denial_as_11(world: World) -> None:
    """A step the policy denies is exit 11, whatever the message says."""
    policy = world.root.parent / "deny.yaml"
    policy.write_text(
        "rules:\n  - {name: no-code, principals: ['*'], capabilities: [python.exec], "
        "decision: deny}\n"
    )
    flow = world.root.parent / "code.yaml"
    flow.write_text("name: code\nsteps:\n  - {id: a, python: 'result = 1'}\n")
    out = airun("exec", str(flow), "--json", env={"AIRUN_POLICY": str(policy)})
    assert out.returncode == 11, out
