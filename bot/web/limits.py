"""JSON parsing with a nesting-depth cap checked before parsing, so no payload can exhaust the stack."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any


class TooDeep(ValueError):
    pass


# A string runs to its closing quote or, unterminated, to the end of the body: once started the pattern
# always matches, so it never backtracks. (A mandatory closing quote made an unterminated string rescan
# the rest of the body from each later quote: quadratic, 64 KB took 17 s.) json.loads fails at an
# unterminated string, so the brackets it swallows are never parsed anyway.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.?[^"\\]*+)*+(?:"|\Z)', re.DOTALL)
# Brackets become +1 / -1 bytes and everything else is dropped, so the depth is a running sum in C.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def max_depth(raw: bytes) -> int:
    """Deepest [ / { nesting outside strings; no recursion, linear in the body (5 MB in well under 1 s)."""
    steps = _STRING.sub(b"", raw).translate(_STEPS, _NOT_BRACKETS)
    return max(0, max(itertools.accumulate(memoryview(steps).cast("b")), default=0))


def loads_bounded(raw: bytes, limit: int) -> Any:
    if max_depth(raw) > limit:
        raise TooDeep(f"nested deeper than {limit}")
    return json.loads(raw.decode("utf-8"))
