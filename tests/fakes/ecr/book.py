"""The book the proxy threads share: scripts, paged answers and the call log (Call), under one lock."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .constants import DEFAULT_ACCOUNT
from .steps import is_final

if TYPE_CHECKING:
    from .events import EventSpec

_MAX_STORED_ANSWERS = 10_000  # paged answers kept for nextToken reads; oldest dropped first


@dataclass
class Call:
    """One request that went through the proxy."""

    op: str  # ECR operation ("DescribeImageScanFindings"), or "METHOD /path" for non-ECR requests
    repository: str | None
    image: str | None  # the tag or digest the caller named
    registry_id: str | None
    region: str | None
    time: float  # time.time() when the request arrived: what ECR's throttling would count
    answered_by: str  # "script" or "moto"
    http_status: int
    error: str | None  # error code answered, if any
    next_token: bool  # a follow-up page of a paginated read
    step: int | None  # index of the scripted step served (same index for follow-up pages)


@dataclass
class _Script:
    op: str
    repository: str
    tag: str | None
    digest: str | None
    registry_id: str | None
    steps: list[dict[str, Any]]
    events: EventSpec | None = None
    registered_at: float = field(default_factory=time.time)
    current: int = 0  # the step the next call gets
    entered_at: float = 0.0  # when `current` became current (a timed step's end is due at entered_at + for_s)
    # When the timeline first moves onto a final step (steps.is_final), from registration time plus the
    # for_s before it: known as soon as only timed steps lead there, so it may lie ahead of now.
    timeline_completed_at: float | None = None
    final_step: int | None = None  # the index of that step
    events_claimed: bool = False  # the scan event is scheduled (once per timeline)
    book_key: tuple[str, str | None, str, str | None, str | None] | None = None  # set by _Book.add
    completed_at: float | None = None  # first answer with findings; repeats keep it, as ECR's do

    def __post_init__(self) -> None:
        self.entered_at = self.entered_at or self.registered_at

    def covers(self, registry_id: str) -> bool:
        return self.registry_id is None or self.registry_id == registry_id

    def advance(self, now: float) -> None:
        """Move past timed steps whose time is up. Caller holds the book's lock."""
        while self.current < len(self.steps) - 1:
            for_s = self.steps[self.current].get("for_s")
            if for_s is None or now < self.entered_at + for_s:
                return
            self.entered_at += for_s  # the scheduled moment, not when a caller happened to look
            self.current += 1

    def project(self) -> None:
        """Fix timeline_completed_at once the path from the current step to a final one is all timed steps."""
        if self.timeline_completed_at is not None:
            return
        at, index, last = self.entered_at, self.current, len(self.steps) - 1
        while True:
            step = self.steps[index]
            if is_final(step, index == last):
                self.timeline_completed_at, self.final_step = at, index
                return
            if "for_s" not in step or index == last:
                return  # a per-call step (or the end) lies between: completion waits for calls
            at += step["for_s"]
            index += 1


@dataclass(frozen=True)
class _CallContext:
    op: str
    region: str | None
    registry_id: str | None
    repository: str | None
    image_id: Mapping[str, str]  # as the caller asked
    next_token: bool = False
    caller_account: str = DEFAULT_ACCOUNT
    arrived: float | None = None  # time.time() at arrival: a timeline answers as of then


@dataclass
class _Book:
    """Scripts, paged answers and the call log, shared by the proxy threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    scripts: dict[tuple[str, str | None, str, str | None, str | None], _Script] = field(default_factory=dict)
    answers: OrderedDict[str, tuple[dict[str, Any], int]] = field(default_factory=OrderedDict)
    log: list[Call] = field(default_factory=list)

    def add(self, script: _Script) -> None:
        key = (script.op, script.registry_id, script.repository, script.tag, script.digest)
        with self.lock:
            script.book_key = key  # kept: the digest may be filled in later, the key is not
            script.project()  # a first step that is final, or only timed steps before one
            self.scripts[key] = script  # registering the same image again starts a fresh timeline

    def _find(
        self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None, exact: bool = False
    ) -> _Script | None:
        """The script for a call: by digest, then by tag, then repository-wide. Caller holds the lock."""
        candidates = [
            s for s in self.scripts.values() if s.op == op and s.repository == repository and s.covers(registry_id)
        ]
        for matches in (
            lambda s: bool(digest) and s.digest == digest,
            lambda s: bool(tag) and s.tag == tag,
            lambda s: not exact and s.tag is None and s.digest is None,
        ):
            for script in candidates:
                if matches(script):
                    return script
        return None

    def has_exact(self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None) -> bool:
        with self.lock:
            return self._find(op, registry_id, repository, tag, digest, exact=True) is not None

    def script_for(
        self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None
    ) -> _Script | None:
        with self.lock:
            return self._find(op, registry_id, repository, tag, digest)

    def registered(self, script: _Script) -> bool:
        """False once reset or replaced by a script for the same image: its timeline is over unseen."""
        with self.lock:
            return script.book_key is not None and self.scripts.get(script.book_key) is script

    def claim_events(self, script: _Script) -> float | None:
        """The completion time, the first time it is known for a script with events; None otherwise."""
        with self.lock:
            if script.events is None or script.events_claimed or script.timeline_completed_at is None:
                return None
            script.events_claimed = True
            return script.timeline_completed_at

    def unresolved(self, op: str, repository: str) -> list[_Script]:
        with self.lock:
            return [
                s for s in self.scripts.values() if s.op == op and s.repository == repository and s.tag and not s.digest
            ]

    def stamp(self, script: _Script) -> float:
        with self.lock:
            script.completed_at = script.completed_at or time.time()
            return script.completed_at

    def set_digest(self, script: _Script, digest: str) -> str:
        """Fix a tag script's digest once; returns the digest it ends up with."""
        with self.lock:
            script.digest = script.digest or digest
            return script.digest

    def take(
        self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None, now: float | None = None
    ) -> tuple[_Script, dict[str, Any], int] | None:
        """Match and answer from the current step: a timed one stays until its time is up, any other is
        consumed by this call. The last step repeats forever."""
        now = time.time() if now is None else now
        with self.lock:
            script = self._find(op, registry_id, repository, tag, digest)
            if script is None:
                return None
            script.advance(now)
            index = script.current
            step = script.steps[index]
            if "for_s" not in step and index < len(script.steps) - 1:
                script.current, script.entered_at = index + 1, now
                script.project()
            return script, step, index

    def store(self, body: dict[str, Any], step: int) -> str:
        """Keep a paged answer for its follow-up pages; returns the id its nextTokens carry."""
        answer_id = uuid.uuid4().hex
        with self.lock:
            self.answers[answer_id] = (body, step)
            while len(self.answers) > _MAX_STORED_ANSWERS:
                self.answers.popitem(last=False)
        return answer_id

    def stored(self, answer_id: str) -> tuple[dict[str, Any], int] | None:
        with self.lock:
            return self.answers.get(answer_id)

    def record(self, call: Call) -> None:
        with self.lock:
            self.log.append(call)

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        with self.lock:
            found = [
                c for c in self.log if (op is None or c.op == op) and (repository is None or c.repository == repository)
            ]
        return sorted(found, key=lambda c: c.time)  # logged when answered; listed in order of arrival

    def clear_calls(self) -> int:
        with self.lock:
            count = len(self.log)
            self.log.clear()
            return count

    def reset(self) -> None:
        with self.lock:
            self.scripts.clear()
            self.answers.clear()
            self.log.clear()
