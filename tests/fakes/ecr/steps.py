"""Scripted steps: normalize_steps checks them, loads fixtures and expands "repeat"."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .builders import load_fixture
from .constants import _ERROR_HTTP, _STATUS_OPS, SCAN_OP, SCAN_STATUSES

# Step keys by kind; "delay_s", "for_s" and "repeat" go with any kind.
_COMMON_KEYS = frozenset({"delay_s", "for_s", "repeat"})
_KIND_KEYS = {
    "status": frozenset(
        {"status", "description", "findings", "enhanced_findings", "counts", "no_findings_object", "completed_ago_s"}
    ),
    "error": frozenset({"error", "http", "message"}),
    "moto": frozenset({"moto"}),
    "response": frozenset({"response", "retarget"}),
}
# Scan statuses after which ECR's answer no longer changes (ACTIVE counts once it lists findings).
_FINAL_STATUSES = frozenset({"COMPLETE", "FAILED", "UNSUPPORTED_IMAGE"})


def normalize_steps(steps: Sequence[Mapping[str, Any]], op: str = SCAN_OP) -> list[dict[str, Any]]:
    """Check steps, load fixtures and expand "repeat"; raises ValueError naming the bad step.

    A step with "for_s" answers every call for that many seconds after it became current, then the
    next step is current; a step without answers one call. "repeat" copies a step, its for_s too.
    """
    if isinstance(steps, Mapping) or not steps:
        raise ValueError("steps must be a non-empty list of step objects")
    out: list[dict[str, Any]] = []
    for index, raw in enumerate(steps):
        try:
            step = _normalize_step(raw, op)
        except ValueError as exc:
            raise ValueError(f"step {index}: {exc}") from None
        repeat = step.pop("repeat", 1)
        out.extend(copy.deepcopy(step) for _ in range(repeat))
    return out


def _normalize_step(raw: Mapping[str, Any], op: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"a step is an object, got {type(raw).__name__}")
    step = dict(raw)
    if "fixture" in step:
        step = {**_fixture_step(str(step.pop("fixture"))), **step}
    kinds = [kind for kind in _KIND_KEYS if kind in step]
    if len(kinds) > 1:
        raise ValueError(f"a step is one of status/error/moto/response, got {kinds}")
    kind = kinds[0] if kinds else "moto"  # a bare {"delay_s": n} is a slow pass-through
    unknown = set(step) - _KIND_KEYS[kind] - _COMMON_KEYS
    if unknown:
        raise ValueError(f"unknown keys for a {kind} step: {sorted(unknown)}")
    _check_common(step)
    if kind == "status":
        _check_status_step(step, op)
    elif kind == "error":
        if not isinstance(step["error"], str) or not step["error"]:
            raise ValueError("error must be an error code such as 'ThrottlingException'")
        http = step.get("http", _ERROR_HTTP.get(step["error"], 400))
        if not isinstance(http, int) or not 400 <= http <= 599:
            raise ValueError(f"http must be a 4xx/5xx status, got {http!r}")
        if "message" in step and not isinstance(step["message"], str):
            raise ValueError("message must be a string")
    elif kind == "moto" and step.get("moto", True) is not True:
        raise ValueError("moto must be true")
    elif kind == "response" and not isinstance(step["response"], Mapping):
        raise ValueError("response must be a JSON object")
    return step


def _fixture_step(name: str) -> dict[str, Any]:
    body = load_fixture(name)
    if "__type" in body:
        return {"error": body["__type"], "message": body.get("message", "")}
    return {"response": body}


def _check_common(step: Mapping[str, Any]) -> None:
    delay = step.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ValueError(f"delay_s must be a number >= 0, got {delay!r}")
    repeat = step.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    if "for_s" in step:
        for_s = step["for_s"]
        if isinstance(for_s, bool) or not isinstance(for_s, int | float) or not math.isfinite(for_s) or for_s <= 0:
            raise ValueError(f"for_s must be a number of seconds > 0 (how long the step answers), got {for_s!r}")


def is_final(step: Mapping[str, Any], last: bool) -> bool:
    """Whether a normalized step's answer ends the scan: the moment a timeline moves onto it is its completion.

    COMPLETE, FAILED, UNSUPPORTED_IMAGE and ACTIVE-with-findings are final, from a status or a recorded
    response step. An error step is final only as the last step (it then stands for good); earlier, like
    a throttle or a ScanNotFound before the scan starts, the timeline goes on past it. A moto step is
    never final: moto decides what it answers, not the script.
    """
    if "error" in step:
        return last
    if "status" in step:
        status = step["status"]
        listed = ("findings" in step or "enhanced_findings" in step) and not step.get("no_findings_object")
    elif "response" in step:
        body = step["response"]
        scan_status = body.get("imageScanStatus")
        status = scan_status.get("status") if isinstance(scan_status, Mapping) else None
        listed = isinstance(body.get("imageScanFindings"), Mapping)
    else:
        return False
    return status in _FINAL_STATUSES or (status == "ACTIVE" and listed)


def _check_status_step(step: Mapping[str, Any], op: str) -> None:
    if op not in _STATUS_OPS:
        raise ValueError(f"status steps answer {sorted(_STATUS_OPS)}, not {op}")
    if step["status"] not in SCAN_STATUSES:
        raise ValueError(f"status must be one of {sorted(SCAN_STATUSES)}, got {step['status']!r}")
    has_basic, has_enhanced = "findings" in step, "enhanced_findings" in step
    if has_basic and has_enhanced:
        raise ValueError("give findings (basic) or enhanced_findings, not both")
    if step.get("no_findings_object") and (has_basic or has_enhanced or "counts" in step):
        raise ValueError("no_findings_object excludes findings and counts")
    if op != SCAN_OP and (has_basic or has_enhanced or "counts" in step):
        raise ValueError(f"{op} answers carry no findings")
    for key in ("findings", "enhanced_findings"):
        if key in step and not (isinstance(step[key], list) and all(isinstance(f, Mapping) for f in step[key])):
            raise ValueError(f"{key} must be a list of finding objects")
    # An old scan's answer: imageScanCompletedAt this long before the answer (what ECR still says right after
    # StartImageScan, until the new scan starts).
    ago = step.get("completed_ago_s")
    if ago is not None and (
        isinstance(ago, bool) or not isinstance(ago, int | float) or not math.isfinite(ago) or ago <= 0
    ):
        raise ValueError(f"completed_ago_s must be a number of seconds > 0, got {ago!r}")
    counts = step.get("counts")
    if counts is not None and not (
        isinstance(counts, Mapping) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values())
    ):
        raise ValueError("counts must be an object of severity -> integer, or null to omit it")
