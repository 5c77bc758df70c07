"""The engine: takes a workflow's run from its plan to an end state.

``planner`` decides what a run will do (resume is replay); ``runner`` drives it; ``scheduler``
starts ready steps; ``execution`` runs one step's attempts; ``gatekeeper`` is a run's side of a
gate; ``compensation`` rolls a run back; ``ledger`` is the one writer of state, checked against
``state``'s transitions; ``claim`` and ``cancel`` take or end a run; ``doctor`` checks a store.
"""
