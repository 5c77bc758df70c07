"""How step outputs are kept in the store.

- pandas DataFrames and Arrow tables become output tables, written through Arrow (no
  pickling): a small one as Parquet bytes in ``airun_outputs``, a larger one as a DuckDB table in
  the ``outputs`` schema (:mod:`airun_nb.store.packed`). A DataFrame's index and dtypes come back
  through the pandas metadata Arrow keeps, stored beside the table.
- JSON-able values (None, numbers, strings, lists, dicts of those) are stored as JSON.
- Anything else goes through the one declared fallback, :mod:`pickle`, as a BLOB signed with
  the key outside the store (:mod:`airun_nb.store.signing`): a pickle without a valid signature
  is refused, never unpickled.
- A value that cannot be pickled either is recorded as ``unstorable``: the run goes on, but on
  resume that step has to run again (and the user is told why).
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from airun_nb.store import signing

if TYPE_CHECKING:
    from airun_nb.store.backend import Backend

JSON_KINDS = {"none", "json"}


def encode(value: Any, store: Backend, table_name: str) -> dict[str, Any]:
    """Store ``value``; return the step-row fields that describe it."""
    if value is None:
        return {"output_kind": "none"}
    if isinstance(value, pd.DataFrame):
        frame, extra = _portable(value)
        table = pa.Table.from_pandas(frame, preserve_index=None)
        meta = (table.schema.metadata or {}).get(b"pandas")
        store.put_table(table_name, table.replace_schema_metadata(None))
        extra["pandas"] = json.loads(meta) if meta else None
        return {
            "output_kind": "pandas",
            "output_table": table_name,
            "output_json": json.dumps(extra),
        }
    if isinstance(value, pa.Table):
        store.put_table(table_name, value)
        return {"output_kind": "arrow", "output_table": table_name}
    if isinstance(value, (str, int, float, bool, list, dict)):
        try:
            text = json.dumps(value, allow_nan=True)
            # Only values JSON gives back unchanged (no tuples, no int keys...).
            if _same(json.loads(text), value):
                return {"output_kind": "json", "output_json": text}
        except (TypeError, ValueError):
            pass
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return {
            "output_kind": "unstorable",
            "output_json": json.dumps(f"{type(value).__name__}: {exc}"),
        }
    return {"output_kind": "pickle", "output_blob": base64.b64encode(signing.sign(blob)).decode()}


def decode_inline(row: Mapping[str, Any]) -> tuple[bool, Any]:
    """Decode outputs that live in the row itself; (False, None) for table outputs."""
    kind = row.get("output_kind")
    if kind in (None, "none"):
        return True, None
    if kind == "json":
        return True, json.loads(row["output_json"])
    if kind == "pickle":
        blob = row.get("output_blob")
        if isinstance(blob, str):
            blob = base64.b64decode(blob)
        if not isinstance(blob, (bytes, bytearray)):
            raise ValueError("the pickled output is missing from the store")
        step = row.get("step_id")
        what = f"the stored output of step '{step}'" if step else "a stored output"
        return True, pickle.loads(signing.verify(blob, what))
    return False, None


def decode(row: Mapping[str, Any], store: Backend) -> Any:
    ok, value = decode_inline(row)
    if ok:
        return value
    kind = row.get("output_kind")
    if kind in ("pandas", "arrow"):
        table = store.get_table(row["output_table"], large=kind == "pandas")
        if kind == "arrow":
            return table
        extra = json.loads(row["output_json"]) if row.get("output_json") else {}
        frame = None
        if extra.get("pandas"):
            try:
                meta = json.dumps(extra["pandas"]).encode()
                frame = table.replace_schema_metadata({b"pandas": meta}).to_pandas()
            except Exception:
                frame = None
        if frame is None:
            frame = table.to_pandas()
        return _restore(frame, extra)
    raise ValueError(f"output of kind {kind!r} cannot be loaded")


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same container and key types all the way down."""
    if type(a) is not type(b):
        return isinstance(a, float) and isinstance(b, float)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)  # NaN


def _portable(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Columns DuckDB would not give back as they were, in a form it does (and how to undo)."""
    extra: dict[str, Any] = {"timedelta": [], "categorical": {}}
    changed = {}
    for col in frame.columns:
        dtype = frame[col].dtype
        if pd.api.types.is_timedelta64_dtype(dtype):
            extra["timedelta"].append(str(col))
            unit = np.datetime_data(str(dtype))[0] if isinstance(dtype, np.dtype) else "ns"
            if unit != "ns":  # pandas 3 keeps s, ms and us too: the integers count those
                extra.setdefault("timedelta_unit", {})[str(col)] = unit
            changed[col] = frame[col].astype("int64")
        elif isinstance(dtype, pd.CategoricalDtype):
            cats = dtype.categories.tolist()
            try:
                json.dumps(cats)
            except (TypeError, ValueError):
                continue
            extra["categorical"][str(col)] = {"categories": cats, "ordered": bool(dtype.ordered)}
            changed[col] = frame[col].astype(dtype.categories.dtype)
    if changed:
        frame = frame.assign(**{str(k): v for k, v in changed.items()})
    return frame, extra


def _restore(frame: pd.DataFrame, extra: dict[str, Any]) -> pd.DataFrame:
    units = extra.get("timedelta_unit") or {}
    for col in extra.get("timedelta", []):
        if col in frame:
            unit = units.get(col, "ns")
            frame[col] = pd.to_timedelta(frame[col], unit=unit).astype(f"timedelta64[{unit}]")
    for col, info in (extra.get("categorical") or {}).items():
        if col in frame:
            frame[col] = frame[col].astype(
                pd.CategoricalDtype(info["categories"], ordered=info["ordered"])
            )
    return frame


def storable(row: Mapping[str, Any]) -> bool:
    return row.get("output_kind") != "unstorable"
