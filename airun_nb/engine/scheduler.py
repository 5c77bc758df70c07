"""The DAG loop: start every step whose needs are done, independent ones concurrently."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from airun_nb.engine.state import DONE_STEP, S_FAILED, StepState
from airun_nb.spec.parser import WorkflowSpec


def schedule(
    spec: WorkflowSpec,
    states: Mapping[str, StepState],
    run_step: Callable[[StepState], None],
    on_failed: Callable[[StepState], None],
    stopped: Callable[[], bool],
) -> None:
    """Run the steps that are not done, in dependency order, ``max_parallel`` at a time.

    A step that is alone in flight and has no timeout runs inline (no thread hand-off). A
    failed step is reported through ``on_failed``; once ``stopped()`` says so, nothing new
    starts and the steps in flight finish. A step that ends neither done nor failed (a gate
    waiting for its decision) holds back what needs it.
    """
    if all(st.status in DONE_STEP for st in states.values()):
        return  # everything replayed
    waiting: dict[str, int] = {}
    downstream = spec.downstream()
    ready: list[tuple[int, str]] = []
    for s in spec.steps:
        st = states[s.id]
        if st.status in DONE_STEP:
            continue
        waiting[s.id] = sum(1 for n in s.needs if states[n].status not in DONE_STEP)
        if waiting[s.id] == 0:
            heapq.heappush(ready, (s.index, s.id))

    def after(st: StepState) -> None:
        if st.status == S_FAILED:
            on_failed(st)
            return
        if st.status not in DONE_STEP:
            return  # e.g. a gate waiting for its decision: what needs it waits too
        for d in downstream[st.id]:
            if d not in waiting:
                continue
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, (spec.by_id[d].index, d))

    inflight: dict[Future[None], StepState] = {}
    pool: ThreadPoolExecutor | None = None
    try:
        while True:
            while ready and len(inflight) < spec.max_parallel and not stopped():
                _, sid = heapq.heappop(ready)
                st = states[sid]
                if not inflight and not ready and st.spec.timeout is None:
                    run_step(st)
                    after(st)
                    continue
                if pool is None:
                    pool = ThreadPoolExecutor(
                        max_workers=spec.max_parallel, thread_name_prefix="airun-step"
                    )
                inflight[pool.submit(run_step, st)] = st
            if not inflight:
                break
            done, _ = wait(list(inflight), timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                st = inflight.pop(fut)
                fut.result()
                after(st)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
