"""The bot's TOML config built as a dict and written as TOML: the one builder of the tests, the demo and the scripts."""

from __future__ import annotations

import datetime
import math
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GITLAB_URL = "https://gitlab.example.com"
REDIS_URL = "redis://127.0.0.1:6379/0"
GROUP = "e2e"
PUSH_APP = "docker-push"
PUSH_API = "docker-push-api"


def harness_defaults() -> dict[str, Any]:
    """The config the test harness runs the stack with; a fresh key prefix per call."""
    return {
        "gitlab": {"url": GITLAB_URL, "timeout_s": 5},
        # A key prefix of its own: test sessions running at once on one Redis never see each other's work.
        "redis": {"url": REDIS_URL, "key_prefix": f"esgtest-{secrets.token_hex(4)}"},
        "policy": {"fail_on": ["CRITICAL", "HIGH"], "max_listed": 5},
        "scan": {
            "poll_interval_s": 1,
            "timeout_s": 12,
            "not_found_grace_s": 2,
            "backoff_max_s": 2,
            "enhanced_settle_s": 1,
            "first_read_after_s": 0,  # the suites' gates read ECR at once; tests of the delay set it
        },
        "ecr": {"rate_per_s": 100, "burst": 100},
        "sweep": {"interval_s": 2, "stuck_after_s": 5},
        "celery": {"visibility_timeout_s": 60},
        # No worker metrics port: stacks of several workers (and suites at once) would fight over one.
        "metrics": {"worker_port": 0},
        "projects": [
            {
                "path": f"{GROUP}/*",
                "images": [
                    {"repository": "app", "tag": "{short_sha}", "push_job": PUSH_APP},
                    {"repository": "api", "tag": "api-{short_sha}", "push_job": PUSH_API},
                ],
            }
        ],
    }


def build_config(*, defaults: bool = True, **sections: Any) -> dict[str, Any]:
    """The config as a dict: the harness's defaults (none with defaults=False), each keyword merged over them.

    A keyword names a section: a mapping is merged key by key into that section (nested mappings too), any
    other value (`projects=[...]`) replaces it; None drops a section or a key (`ecr=None`,
    `scan={"backoff_max_s": None}`).
    """
    return _merge(harness_defaults() if defaults else {}, sections)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            merged[key] = _merge(merged[key] if isinstance(merged.get(key), dict) else {}, value)
        else:
            merged[key] = value
    return merged


def write_config(path: Path, **sections: Any) -> Path:
    """Write build_config(**sections) to path as TOML; returns the path."""
    path.write_text(dumps(build_config(**sections)), encoding="utf-8")
    return path


# --- dict -> TOML -------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def dumps(config: Mapping[str, Any]) -> str:
    """TOML text of a dict of strings, ints, floats, bools, lists of those, tables and arrays of tables.

    Dates (datetime.date) are TOML local dates. Any other value (None, datetimes, bytes, sets, ...) raises
    TypeError; a list mixing tables and other values too.
    """
    lines: list[str] = []
    _table(lines, config, (), header=None)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    if not isinstance(value, list | tuple) or not value:
        return False
    tables = [isinstance(item, Mapping) for item in value]
    if any(tables) and not all(tables):
        raise TypeError(f"a list mixes tables and other values: {value!r}")
    return all(tables)


def _table(lines: list[str], table: Mapping[str, Any], path: tuple[str, ...], header: str | None) -> None:
    # Plain keys first: once a [header] follows, a key = value line belongs to that header's table.
    plain = {k: v for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    indent = "  " * max(len(path) - 1, 0)
    if header is not None:
        lines += ["", f"{indent}{header}"]
    lines += [f"{indent}{_key(k)} = {_value(v)}" for k, v in plain.items()]
    for key, value in table.items():
        if key in plain:
            continue
        sub = (*path, _key(key))
        name = ".".join(sub)
        if isinstance(value, Mapping):
            _table(lines, value, sub, f"[{name}]")
        else:
            for item in value:
                _table(lines, item, sub, f"[[{name}]]")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML keys are strings, not {type(key).__name__}: {key!r}")
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")
        elif "\ud800" <= char <= "\udfff":
            raise ValueError(f"a lone surrogate has no TOML (nor UTF-8) form: {text!r}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"TOML integers are 64-bit: {value}")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has a "." or an exponent: TOML reads it back as this very float
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()  # a TOML local date: `expires = 2027-01-31`
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}: {value!r}")
