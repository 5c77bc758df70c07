"""How step outputs are kept in the store.

- pandas DataFrames and Arrow tables become DuckDB tables in the ``outputs`` schema, written
  through Arrow (no pickling). A DataFrame's index and dtypes come back through the pandas
  metadata Arrow keeps, stored beside the table.
- JSON-able values (None, numbers, strings, lists, dicts of those) are stored as JSON.
- Anything else goes through the one declared fallback, :mod:`pickle`, as a BLOB.
- A value that cannot be pickled either is recorded as ``unstorable``: the run goes on, but on
  resume that step has to run again (and the user is told why).
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from .store import Store

JSON_KINDS = {"none", "json"}


def encode(value: Any, store: Store, table_name: str) -> dict[str, Any]:
    """Store ``value``; return the step-row fields that describe it."""
    if value is None:
        return {"output_kind": "none"}
    if isinstance(value, pd.DataFrame):
        table = pa.Table.from_pandas(value, preserve_index=None)
        meta = (table.schema.metadata or {}).get(b"pandas")
        store.put_table(table_name, table.replace_schema_metadata(None))
        return {
            "output_kind": "pandas",
            "output_table": table_name,
            "output_json": meta.decode() if meta else None,
        }
    if isinstance(value, pa.Table):
        store.put_table(table_name, value)
        return {"output_kind": "arrow", "output_table": table_name}
    if isinstance(value, (str, int, float, bool, list, dict)):
        try:
            return {"output_kind": "json", "output_json": json.dumps(value, allow_nan=True)}
        except (TypeError, ValueError):
            pass
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        return {
            "output_kind": "unstorable",
            "output_json": json.dumps(f"{type(value).__name__}: {exc}"),
        }
    return {"output_kind": "pickle", "output_blob": base64.b64encode(blob).decode()}


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
        return True, pickle.loads(blob)
    return False, None


def decode(row: Mapping[str, Any], store: Store) -> Any:
    ok, value = decode_inline(row)
    if ok:
        return value
    kind = row.get("output_kind")
    if kind in ("pandas", "arrow"):
        table = store.get_table(row["output_table"])
        if kind == "arrow":
            return table
        meta = row.get("output_json")
        if meta:
            try:
                return table.replace_schema_metadata({b"pandas": meta.encode()}).to_pandas()
            except Exception:
                pass
        return table.to_pandas()
    raise ValueError(f"output of kind {kind!r} cannot be loaded")


def storable(row: Mapping[str, Any]) -> bool:
    return row.get("output_kind") != "unstorable"
