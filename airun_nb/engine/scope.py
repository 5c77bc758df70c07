"""What templates and inline code see: ``params``, ``steps``, ``run`` and the notebook's names,
and step outputs loaded from the store the first time they are read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from airun_nb.engine import stepkinds as kinds
from airun_nb.engine.state import DONE_STEP, MISSING, S_COMPLETED, StepState
from airun_nb.errors import TemplateError
from airun_nb.governance import secrets
from airun_nb.spec import dialect
from airun_nb.spec.parser import WorkflowSpec
from airun_nb.store import outputs
from airun_nb.store.backend import Backend


class Scope:
    """The names a run's templates resolve, and its step outputs."""

    def __init__(
        self,
        spec: WorkflowSpec,
        states: dict[str, StepState],
        store: Backend,
        *,
        params: dict[str, Any],
        namespace: Mapping[str, Any],
        run_id: Callable[[], str],
        user: str,
    ) -> None:
        self.spec = spec
        self.states = states
        self.store = store
        self.params = params
        self.namespace = namespace
        self._run_id = run_id
        self.user = user
        self.blob_source: dict[str, str] = {}

    def context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        if self.spec.seed_dialect:
            ctx.update(self.namespace)
            done = [
                (
                    st.id,
                    st.spec.body if st.spec.kind == "capability" else None,
                    self.output_of(st.id),
                )
                for st in self.states.values()
                if st.status == S_COMPLETED
            ]
            ctx.update(dialect.seed_names(done, self.params, self._run_id()))
            for name in dialect.literal_names(self.spec):  # undefined: left as text
                ctx.setdefault(name, "{{" + name + "}}")
        else:
            ctx.update(self.namespace)
        ctx["params"] = self.params
        ctx["steps"] = Steps(self)
        ctx["run"] = {"id": self._run_id(), "workflow": self.spec.name, "user": self.user}
        ctx.update(secrets.namespace())  # {{ secrets.NAME }}, looked up when rendered
        return ctx

    def output_of(self, step_id: str) -> Any:
        st = self.states[step_id]
        if st.value is MISSING:
            if st.status not in DONE_STEP:
                raise TemplateError(f"step '{step_id}' has not finished; add it to 'needs'")
            row = dict(st.out)
            row.setdefault("step_id", step_id)  # named when its signature is refused
            if row.get("output_kind") == "pickle":
                run = self.blob_source.get(step_id, self._run_id())
                row["output_blob"] = self.store.output_blob(run, step_id)
            st.value = outputs.decode(row, self.store)
        return st.value


class StepView:
    def __init__(self, scope: Scope, step_id: str) -> None:
        self._scope = scope
        self.id = step_id

    @property
    def output(self) -> Any:
        return self._scope.output_of(self.id)

    @property
    def status(self) -> str:
        return self._scope.states[self.id].status

    def __getattr__(self, name: str) -> Any:
        out = self.output
        if isinstance(out, Mapping) and name in out:
            return out[name]
        raise AttributeError(f"step '{self.id}' has no attribute '{name}' (use .output)")

    def __str__(self) -> str:
        return kinds.sql_relation_name(self.id)


class Steps:
    """``steps`` in templates and inline code: ``steps.load.output``."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def __getattr__(self, name: str) -> StepView:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in self._scope.states:
            raise AttributeError(f"no step '{name}'")
        return StepView(self._scope, name)

    __getitem__ = __getattr__

    def __contains__(self, name: object) -> bool:
        return name in self._scope.states


class StepRefs(Steps):
    """``steps`` inside SQL: ``{{ steps.clean }}`` names the step's output as a relation."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> StepView:
        view = super().__getattr__(name)
        self.used.add(name)
        return view

    __getitem__ = __getattr__
