"""The seed runtime's commands, each answered with the command that replaces it.

``airun workflow resume RUN --decision approve``, ``airun bridge exec-workflow FILE``, ``airun
undo --steps N``... are not guessed at: the old verbs acted on ids and a workspace that mean
something else here, so each prints one line naming the new command (with the arguments it was
given, where they carry over) and exits 2, like any unknown usage.
"""

from __future__ import annotations

import sys

import click

# old verb -> (sub-verb or "" -> the new command)
MOVED: dict[str, dict[str, str]] = {
    "workflow": {
        "list": "`airun runs` (add --workflow NAME for one workflow)",
        "resume": "`airun approve RUN GATE` or `airun reject RUN GATE`, then `airun resume RUN` "
        "(`airun approvals` lists the open gates)",
        "": "`airun runs`, `airun approvals`, `airun approve`/`reject`, `airun resume`",
    },
    "bridge": {
        "exec-workflow": "`airun exec FILE --input KEY=VALUE --json` (same exit codes)",
        "workflow-resume": "`airun resume RUN`",
        "workflow-cancel": "`airun cancel RUN [--rollback]`",
        "workflow-rollback": "`airun rollback RUN`",
        "exec-capability": "a one-step workflow file run with `airun exec FILE`",
        "": "`airun exec`, `airun resume`, `airun cancel`, `airun rollback`",
    },
    "undo": {
        "": "`airun rollback RUN --steps N` (undo the last N finished steps of run RUN; "
        "`airun runs` lists the runs)",
    },
    "execute": {"": "a one-step workflow file run with `airun exec FILE`"},
    "inspect": {
        "": "`airun validate FILE` for a workflow; capabilities are listed in docs/migrating.md"
    },
    "init": {"": "nothing to initialise: `airun exec FILE` creates ./airun.duckdb on first use"},
    "facade": {
        "": "the workflow the facade routes to, run with `airun exec FILE` "
        "(`airun validate FACADE.yaml` names it)"
    },
    "governance": {"": "a policy file (AIRUN_POLICY) checked with `airun validate POLICY.yaml`"},
}


def command(name: str) -> click.Command:
    """A command that answers an old verb with its replacement."""

    @click.command(
        name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        hidden=True,
    )
    @click.pass_context
    def moved(ctx: click.Context) -> None:
        table = MOVED[name]
        sub = ctx.args[0] if ctx.args and ctx.args[0] in table else ""
        old = " ".join(["airun", name, *([sub] if sub else [])])
        click.echo(f"error: `{old}` is from the AI-First Runtime; use {table[sub]}", err=True)
        sys.exit(2)

    return moved
