#!/usr/bin/env python3
"""How fast the approval service answers: a decision's round trip and its arrival on the stream.

    python benchmarks/service_latency.py              # 20 gates
    python benchmarks/service_latency.py --gates 50

A real `airun serve` on 127.0.0.1 over a fresh store; N runs wait at a gate (started in this
process). For each gate: the time of `POST /v1/runs/{run}/gates/review/approve`, and the time
from sending it until the `gate_decided` transition arrives on an open `GET /v1/events` stream.
Also the median `GET /v1/runs` time with N runs. Prints medians and maxima in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

from airun_nb import Workflow  # noqa: E402
from support.service import NAMESPACE, gated_spec, make_token, running_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gates", type=int, default=20)
    args = parser.parse_args()
    os.environ.update(AIRUN_IDENTITY="env", AIRUN_USER="alice")
    folder = Path(tempfile.mkdtemp(prefix="airun-svc-bench-"))
    os.chdir(folder)
    db = folder / "airun.duckdb"
    runs = [
        Workflow.from_yaml(gated_spec(f"w{i}")).run(db=db, namespace=NAMESPACE).run_id
        for i in range(args.gates)
    ]
    token = make_token(db, "bob")
    arrived: dict[str, float] = {}
    with running_server(db, folder) as server:
        headers = {"Authorization": f"Bearer {token}"}

        def listen() -> None:
            with httpx.stream(
                "GET", server.url + "/v1/events", headers=headers, timeout=None
            ) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event["kind"] == "gate_decided":
                            arrived[event["run_id"]] = time.perf_counter()
                            if len(arrived) == len(runs):
                                return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(1.0)
        posts, sent = [], {}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            reads = []
            for _ in range(10):
                t0 = time.perf_counter()
                c.get("/v1/runs").raise_for_status()
                reads.append(time.perf_counter() - t0)
            for run_id in runs:
                sent[run_id] = time.perf_counter()
                c.post(f"/v1/runs/{run_id}/gates/review/approve").raise_for_status()
                posts.append(time.perf_counter() - sent[run_id])
                time.sleep(0.05)
        listener.join(30)
    stream = [arrived[r] - sent[r] for r in runs if r in arrived]

    def ms(values: list[float]) -> str:
        return (
            f"median {statistics.median(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"
        )

    print(f"GET /v1/runs ({args.gates} runs)        {ms(reads)}")
    print(f"POST approve (round trip)        {ms(posts)}")
    print(f"approve -> gate_decided on SSE   {ms(stream)}   ({len(stream)}/{len(runs)} arrived)")
    subprocess.run(["rm", "-rf", str(folder)], check=False)


if __name__ == "__main__":
    main()
