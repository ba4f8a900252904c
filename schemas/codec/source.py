"""What the encoder and decoder generators share: the namespace, fresh names, comments.

:class:`_SourceWriter` holds the state of one codec being written: the namespace
the generated source runs in (the runtime helpers it calls, and every constant
the generators bind, under fresh names), the helper functions written so far
and the lines to run once before a batch loop. ``schemas.codec.encode`` and
``schemas.codec.decode`` add the methods that write each direction.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from schemas.codec.schema import _Array, _Map, _Node, _Prim, _Rec

_Lines = list[str]


def _indent(lines: list[str], depth: int = 1) -> list[str]:
    pad = "    " * depth
    return [pad + line for line in lines]


def _printable(text: str) -> str:
    """``text`` safe inside a comment of generated code: no line breaks, ASCII only."""
    return text.encode("unicode_escape").decode("ascii")


def _describe(node: _Node) -> str:
    """A type in words, for the comments of the generated code."""
    if isinstance(node, _Prim):
        return node.kind
    if isinstance(node, _Rec):
        return f"record {_printable(node.name)}"
    if isinstance(node, _Array):
        return f"array<{_describe(node.items)}>"
    if isinstance(node, _Map):
        return f"map<{_describe(node.values)}>"
    inner = _describe(node.inner)
    return f"null | {inner}" if node.null_index == 0 else f"{inner} | null"


class _SourceWriter:
    """Writes the source of one codec; constants go into the namespace ``ns``.

    ``batch`` code runs inside the loops of ``encode_many``/``decode_many``: it
    may keep state from one record to the next in local variables, declared in
    ``inits`` (lines run once before the loop). ``runtime`` is what the
    generated code calls, by name.
    """

    def __init__(self, root: _Rec, runtime: Mapping[str, Any]) -> None:
        self.root = root
        self.ns: dict[str, Any] = dict(runtime)
        self.helpers: list[str] = []
        self.inits: list[str] = []
        self.decoding_batch = False
        #: Set while writing decode(): names of module globals it keeps state in.
        self.state_globals: list[str] | None = None
        self._ids = itertools.count()
        self._helper_names: dict[tuple[int, bool], str] = {}

    def fresh(self, stem: str) -> str:
        return f"{stem}{next(self._ids)}"

    def const(self, stem: str, value: Any) -> str:
        name = f"_{stem}{next(self._ids)}"
        self.ns[name] = value
        return name
