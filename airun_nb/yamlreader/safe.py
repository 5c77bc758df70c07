"""YAML loading with limits: a document may not expand past a node budget.

YAML aliases let a few hundred bytes describe a structure of 10^8 nodes (the "billion laughs"
shape): loading it is quick, because aliases share objects, but everything that later walks the
document (validation, hashing, JSON) expands it. :func:`load` composes the document first,
counts the nodes it stands for *with every alias expanded* (without expanding anything: each
node's size is computed once), and refuses when aliases add more than :data:`MAX_NODES` nodes to
the ones written in the document, or it uses more than :data:`MAX_ALIASES` aliases, in one line.
Only then are Python objects built, with PyYAML's safe constructor. The nodes a document writes
out itself are bounded by :data:`MAX_BYTES`, so a long plain workflow (50,000 steps) loads.

Text in the plain subset of YAML (no anchors, aliases or tags; see :mod:`airun_nb.yamlreader.plain`)
is read by a faster line reader instead, and cannot expand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from airun_nb.errors import AirunError
from airun_nb.yamlreader import plain as yamlplain

MAX_NODES = 200_000  # nodes that aliases add to a document's own, once expanded
MAX_ALIASES = 1_000  # alias references (``*name``) in one document
MAX_BYTES = 8 * 1024 * 1024

try:  # pragma: no cover - depends on how PyYAML was built
    _Composer: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Composer = yaml.SafeLoader


class YamlLimitError(AirunError):
    """A YAML document is larger than the limits allow."""


class DuplicateKeyError(AirunError):
    """A YAML mapping names the same key twice (PyYAML would keep the last silently)."""

    def __init__(self, key: str, lines: tuple[int, int]) -> None:
        super().__init__(f"duplicate key '{key}' (lines {lines[0] + 1} and {lines[1] + 1})")
        self.key = key
        self.lines = lines  # 0-based, as YAML marks count


def _distinct(root: yaml.Node) -> Iterator[yaml.Node]:
    """Every node of the document once (an aliased node is visited once)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for pair in node.value:
                stack.extend(pair)


def _check_duplicates(root: yaml.Node) -> None:
    for node in _distinct(root):
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, _v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if k.value in first:
                        raise DuplicateKeyError(k.value, (first[k.value], k.start_mark.line))
                    first[k.value] = k.start_mark.line


def expanded_size(root: yaml.Node, *, limit: int | None = None) -> int:
    """How many nodes ``root`` stands for with aliases expanded (stops counting past limit,
    by default :data:`MAX_NODES` more than the distinct nodes it is made of)."""
    if limit is None:
        limit = distinct_nodes(root) + MAX_NODES
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_stack: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            if key in on_stack:  # a recursive structure: infinite once expanded
                return limit + 1
            on_stack.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        on_stack.discard(key)
        total = 1
        for c in children:
            total += sizes.get(id(c), 1)
            if total > limit:
                return total
        sizes[key] = total
    return sizes.get(id(root), 1)


def load(text: str, *, where: str = "the document") -> Any:
    """Load one YAML document (safe types only) within the limits, else :class:`YamlLimitError`.

    YAML syntax errors propagate as PyYAML's ``YAMLError`` (with their marks), so callers can
    report the line."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(
            f"{where} is {len(text)} bytes; the limit is {MAX_BYTES} bytes of YAML"
        )
    doc = yamlplain.load(text)  # never holds an anchor, alias or tag: no limit but the size
    if doc is not yamlplain.NOT_PLAIN:
        return doc
    aliases = text.count("*")
    if aliases > MAX_ALIASES and _count_aliases(text) > MAX_ALIASES:
        raise YamlLimitError(
            f"{where} uses more than {MAX_ALIASES} YAML aliases; refused (alias expansion limit)"
        )
    node = yaml.compose(text, Loader=_Composer)
    if node is None:
        return None
    if aliases:  # without an alias ('*'), no node is reached twice
        own = distinct_nodes(node)
        if expanded_size(node, limit=own + MAX_NODES) > own + MAX_NODES:
            raise YamlLimitError(
                f"{where} expands to more than {MAX_NODES} YAML nodes through aliases; refused"
            )
    _check_duplicates(node)
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def distinct_nodes(root: yaml.Node) -> int:
    """How many nodes the document is made of (an aliased node counts once)."""
    return sum(1 for _ in _distinct(root))


def _count_aliases(text: str) -> int:
    count = 0
    for event in yaml.parse(text, Loader=_Composer):
        if isinstance(event, yaml.AliasEvent):
            count += 1
            if count > MAX_ALIASES:
                break
    return count
