"""JSON parsing with a nesting-depth cap checked before parsing, so no payload can exhaust the stack."""

from __future__ import annotations

import json
import re
from typing import Any


class TooDeep(ValueError):
    pass


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def max_depth(raw: bytes) -> int:
    """Deepest [ / { nesting outside strings; regex scans, no recursion, linear in the body."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads_bounded(raw: bytes, limit: int) -> Any:
    if max_depth(raw) > limit:
        raise TooDeep(f"nested deeper than {limit}")
    return json.loads(raw.decode("utf-8"))
