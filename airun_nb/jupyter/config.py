"""``%config Workflow.*``: per-kernel settings, as IPython configuration."""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Unicode, observe
from traitlets.config import Configurable

from airun_nb.settings import environment


class Workflow(Configurable):
    """``%config Workflow.policy = "policy.yaml"``: the policy file for this kernel."""

    policy = Unicode(None, allow_none=True, help="Path of the policy YAML file.").tag(config=True)
    db = Unicode(None, allow_none=True, help="Default store file for this kernel.").tag(config=True)
    store_code = Bool(
        False,
        help="Store the notebook functions a run calls, by value (cloudpickle), so that "
        "`airun resume` can continue the run from a terminal without this kernel.",
    ).tag(config=True)

    @observe("policy")
    def _policy_changed(self, change: Any) -> None:
        from airun_nb.governance import policy as policy_mod  # on use, not at %load_ext

        policy_mod.configure(change["new"] or None)

    @observe("db")
    def _db_changed(self, change: Any) -> None:
        environment.configure(db=change["new"] or None)  # this kernel only, not its children
