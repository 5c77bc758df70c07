"""A fast loader for plain YAML: block mappings and sequences of simple scalars.

Most workflow texts use a small part of YAML: indented ``key: value`` lines, ``- `` items, plain
words and numbers, one-line quoted strings, ``[a, b]`` lists, ``{k: v}`` mappings of plain
words and ``|`` blocks of code. :func:`load` reads exactly that part line by line (about five
times faster than PyYAML's C loader, whose Python-level constructor is most of its time) and
returns :data:`NOT_PLAIN` for anything else: anchors, aliases, tags, folded or multi-line
scalars, escapes, duplicate keys, tabs, odd indentation, syntax errors. The caller then loads the
text with PyYAML, which also reports the errors, so this path never decides what a document
means on its own: plain scalars are resolved (``yes``, ``3``, ``1.5``, ``null``, ``on``) by
PyYAML's own resolver and constructor. A document read here has no aliases, so it expands to no
more nodes than it has.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

NOT_PLAIN: Any = object()  # the text is outside the plain subset: load it with PyYAML
_MISS: Any = object()


class _NotPlain(Exception):
    pass


# A YAML reader refuses these characters; line breaks other than \n and a BOM need PyYAML too.
_UNUSUAL = re.compile(
    "[^\x0a\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
# indentation, an optional "- " (one level), then "key:" (and its value) or a value
_LINES = re.compile(
    r"^( *)(-(?: +|$))?(?:([A-Za-z_][A-Za-z0-9_\-]*):(?: +|$)(.*)|(.*))$", re.MULTILINE
)
_PLAIN_START = re.compile(r"[^\s\-?:,\[\]{}#&*!|>'\"%@`]")
# a flow collection on one line, maybe followed by a comment, and the items in it
_FLOW = re.compile(r"[\[{]([^\[\]{}]*)[\]}](?: +#.*)?$")
_SCALAR = r"""(?:'((?:[^']|'')*)'|"([^"\\]*)"|([^,'"#]*[^,'"# ]))"""
_QUOTED = re.compile(r"""(?:'((?:[^']|'')*)'|"([^"\\]*)")(?: *| +#.*)$""")
_FLOW_ITEM = re.compile(r" *" + _SCALAR + r" *(,|$)")
_FLOW_ENTRY = re.compile(r" *([A-Za-z_][A-Za-z0-9_\-]*): +" + _SCALAR + r" *(,|$)")
_BLOCK_HEAD = ("|", "|-")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*$")  # always a plain scalar on its own
_WORD_LIST = re.compile(r"\[([A-Za-z_][A-Za-z0-9_.\-/]*)\]$")

_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()
_PLAIN_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:str",
}
_resolved: dict[str, Any] = {}


def _plain(value: str) -> Any:
    """A plain scalar as PyYAML resolves and constructs it (cached per text)."""
    try:
        return _resolved[value]
    except KeyError:
        pass
    if value[0] not in _resolver.yaml_implicit_resolvers:
        out: Any = value
    else:
        tag = _resolver.resolve(yaml.ScalarNode, value, (True, False))
        if tag not in _PLAIN_TAGS:  # timestamps, merge keys, '=' values
            raise _NotPlain
        out = _constructor.construct_object(yaml.ScalarNode(tag, value), deep=True)
    if len(_resolved) < 65_536:
        _resolved[value] = out
    return out


def _scalar(rest: str) -> Any:
    """The value after ``key:`` or ``- `` on one line (not a block scalar)."""
    c = rest[0]
    if c == "'" or c == '"':
        m = _QUOTED.match(rest)
        if m is None:
            raise _NotPlain
        sq, dq = m.group(1, 2)
        return dq if sq is None else sq.replace("''", "'")
    if c == "[" or c == "{":
        return _flow(rest)
    if "#" in rest:
        cut = rest.find(" #")
        if cut >= 0:
            rest = rest[:cut]
    rest = rest.rstrip(" ")
    if not _PLAIN_START.match(rest) or ": " in rest or rest.endswith(":") or "\t" in rest:
        raise _NotPlain
    return _plain(rest)


def _flow_plain(text: str) -> Any:
    if not _PLAIN_START.match(text) or ": " in text or text[-1] == ":":
        raise _NotPlain
    return _plain(text)


def _flow(rest: str) -> Any:
    """A one-line flow sequence or mapping of scalars: ``[a, 'b c']``, ``{k: v, n: 1}``."""
    m = _FLOW.match(rest)
    if m is None or rest[m.end(1)] != ("]" if rest[0] == "[" else "}"):
        raise _NotPlain
    body, pos, end = m.group(1), 0, len(m.group(1))
    if rest[0] == "[":
        items: list[Any] = []
        while pos < end:
            t = _FLOW_ITEM.match(body, pos)
            if t is None:
                raise _NotPlain
            sq, dq, plain = t.group(1, 2, 3)
            items.append(
                _flow_plain(plain)
                if plain is not None
                else dq
                if sq is None
                else sq.replace("''", "'")
            )
            pos = t.end()
            if not t.group(4) and pos < end:  # pragma: no cover - the item ends at a comma
                raise _NotPlain
        return items
    out: dict[Any, Any] = {}
    while pos < end:
        t = _FLOW_ENTRY.match(body, pos)
        if t is None:
            raise _NotPlain
        key = _plain(t.group(1))
        sq, dq, plain = t.group(2, 3, 4)
        if key in out or type(key) not in (str, bool):
            raise _NotPlain
        out[key] = (
            _flow_plain(plain) if plain is not None else dq if sq is None else sq.replace("''", "'")
        )
        pos = t.end()
    return out


class _Reader:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.n = len(self.lines)
        found = _LINES.findall(text)  # one (indent, dash, key, value, value) per line
        if len(found) != self.n:  # pragma: no cover - one match per line, always
            raise _NotPlain
        # The lines that are not blank and not comments, as (indent, column of the content,
        # key or None, value text, line, after a dash) in one pass (a block's lines too: they
        # are skipped when the block is read).
        self.toks: list[tuple[int, int, str | None, str, int, bool]] = [
            (len(sp), len(sp) + len(dash), key or None, rest if key else other, i, bool(dash))
            for i, (sp, dash, key, rest, other) in enumerate(found)
            if key or dash or (other and other[0] != "#")
        ]
        self.p = -1  # the current token
        self.tok: tuple[int, int, str | None, str, int, bool] | None = None
        self.is_dash = False
        self._advance()

    def _advance(self) -> None:
        """Take the next line that is not blank and not a comment."""
        p = self.p = self.p + 1
        if p < len(self.toks):
            tok = self.tok = self.toks[p]
            self.is_dash = tok[5]
        else:
            self.tok = None

    def node(self, parent: int) -> Any:
        """The block node that starts at the current line (indented more than parent)."""
        tok = self.tok
        if tok is None or tok[0] <= parent:
            raise _NotPlain
        if self.is_dash:
            return self.seq(tok[0])
        if tok[2] is None:
            raise _NotPlain  # a lone scalar line (multi-line or a document scalar)
        return self.mapping(tok[0])

    def value(self, rest: str | None, col: int, owner: int, line: int) -> Any:
        """The value after a key or dash at column col whose collection is indented owner."""
        if not rest:
            nxt = self.tok
            if nxt is None:
                return None
            if nxt[0] > owner:
                return self.node(owner)
            if nxt[0] == owner and self.is_dash and owner == col:
                return self.seq(owner)  # "key:" followed by "- item" lines at its indent
            return None
        if rest in _BLOCK_HEAD:
            return self.block(owner, rest == "|-", line + 1)
        if rest[0] in "|>":
            raise _NotPlain
        out = _scalar(rest)
        nxt = self.tok
        if nxt is not None and nxt[0] > owner:
            raise _NotPlain  # a continuation line: a multi-line scalar
        return out

    def mapping(self, indent: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first = True
        while True:
            tok = self.tok
            if tok is None or tok[1] < indent:
                return out
            if tok[1] != indent or tok[2] is None or (self.is_dash and not first):
                if tok[0] < indent:
                    return out
                raise _NotPlain
            first = False
            key = _resolved.get(tok[2], _MISS)
            if key is _MISS:
                key = _plain(tok[2])
            if key in out or type(key) not in (str, bool, int):
                raise _NotPlain  # a duplicate key: PyYAML's path reports it
            rest = tok[3]
            value = _resolved.get(rest, _MISS) if rest else _MISS
            if value is _MISS and rest:  # one word, or a list of one word: no checks needed
                if _WORD.match(rest):
                    value = _plain(rest)
                else:
                    m = _WORD_LIST.match(rest)
                    if m is not None:
                        value = [_plain(m.group(1))]
            if value is _MISS:  # not a plain scalar seen before: the general path
                if rest not in _BLOCK_HEAD:
                    self._advance()  # a block's lines are not tokens
                out[key] = self.value(rest, indent, indent, tok[4])
                continue
            self._advance()  # (every cached text is a valid one-line plain scalar, as a word is)
            nxt = self.tok
            if nxt is not None and nxt[0] > indent:
                raise _NotPlain  # a continuation line: a multi-line scalar
            out[key] = value

    def seq(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while True:
            tok = self.tok
            if tok is None or tok[0] < indent:
                return out
            if tok[0] != indent or not self.is_dash:
                if tok[0] == indent:
                    return out  # the next key of a mapping whose value this was
                raise _NotPlain
            col = tok[1]
            if tok[2] is not None:  # "- key: value ...": a mapping at the dash's column
                self.is_dash = False
                out.append(self.mapping_at(col))
            else:
                if tok[3] not in _BLOCK_HEAD:
                    self._advance()  # a block's lines are not tokens
                out.append(self.value(tok[3], col, indent, tok[4]))

    def mapping_at(self, col: int) -> dict[Any, Any]:
        tok = self.tok
        assert tok is not None
        self.tok = (col, col, tok[2], tok[3], tok[4], False)  # the first key, at its own column
        return self.mapping(col)

    def block(self, parent: int, strip: bool, i: int) -> str:
        """A literal block scalar (``|`` or ``|-``) from line i, indented more than parent."""
        lines, n = self.lines, self.n
        body: list[str] = []
        indent = last = -1
        while i < n:
            line = lines[i]
            if not line:
                if indent < 0:
                    raise _NotPlain  # leading blank lines: PyYAML's rules are subtle there
                body.append("")
                i += 1
                continue
            lead = len(line) - len(line.lstrip(" "))
            if lead == len(line):
                raise _NotPlain  # a line of spaces only
            if indent < 0:
                if lead <= parent:
                    break
                indent = lead
            elif lead < indent:
                break
            body.append(line[indent:])
            last = i
            i += 1
        while body and not body[-1]:
            body.pop()
        if not body:
            raise _NotPlain
        toks, p = self.toks, self.p
        while p < len(toks) and toks[p][4] < i:  # the block's own lines
            p += 1
        self.p = p - 1
        self._advance()
        tok = self.tok
        if tok is not None and tok[0] > parent:
            raise _NotPlain
        text = "\n".join(body)
        # clip keeps the last line's break, which the text's last line does not have
        return text if strip or last == n - 1 else text + "\n"


def load(text: str) -> Any:
    """The document, or :data:`NOT_PLAIN` when the text is outside the plain subset."""
    if _UNUSUAL.search(text) or "\t" in text or text.startswith(("%", "---")):
        return NOT_PLAIN
    if "\n---" in text or "\n..." in text or "\n%" in text:
        return NOT_PLAIN
    if len(_resolved) > 50_000:  # a cache of scalars, not of one document's ids
        _resolved.clear()
    try:
        reader = _Reader(text)
        if reader.tok is None:
            return NOT_PLAIN
        doc = reader.node(-1)
        if reader.tok is not None:
            return NOT_PLAIN
    except (_NotPlain, RecursionError):
        return NOT_PLAIN
    return doc
