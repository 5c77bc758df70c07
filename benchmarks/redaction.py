#!/usr/bin/env python3
"""Redaction is linear time: seconds to redact texts of growing size, printed.

    python benchmarks/redaction.py

Four shapes per size: one long word (the worst case of the old URL pattern), text with many
``key=value`` pairs, text dense with URLs and tokens, and a JSON record through the journal
redactor with registered secret values. Target: 1 MB under 0.1 s for every shape. The
benchmark reports; it exits 0 whether the target is met or not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from airun_nb.governance import audit as auditlog

SIZES = (8_000, 128_000, 1_000_000)


def shapes(n: int) -> dict[str, Callable[[], object]]:
    word = "a" * n
    pairs = ("k=v&" * (n // 4))[:n]
    dense = ("see https://u:p@h.example/x?token=abc Bearer abcdefghijk ghp_abcdefghijkl1234 " * n)[
        :n
    ]
    record = {"t": "step", "error": dense, "output_json": json.dumps({"text": word})}
    auditlog.register_secret("s3cr3t-value-1")
    auditlog.register_secret("another-secret-2")
    return {
        "one long word": lambda: auditlog.redact(word),
        "key=value pairs": lambda: auditlog.redact(pairs),
        "urls and tokens": lambda: auditlog.redact(dense),
        "journal record": lambda: auditlog.scrub(record),
    }


def main() -> None:
    print(f"{'shape':<18} " + " ".join(f"{n:>12,}" for n in SIZES) + "   (seconds)")
    for name in shapes(10):
        row = []
        for n in SIZES:
            fn = shapes(n)[name]
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            row.append(best)
        mark = "ok" if row[-1] < 0.1 else "SLOW"
        print(f"{name:<18} " + " ".join(f"{t:>12.4f}" for t in row) + f"   1 MB {mark}")


if __name__ == "__main__":
    main()
