"""Pure: the dashboard's view model: open, stuck and finished gates, 7-day rates and exceptions expiring soon."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.core.dashboard_parts import (
    PATH_LIMIT,
    RATE_DAYS,
    TEXT_LIMIT,
    VALUE_LIMIT,
    ExpiringRow,
    Rates,
    age_text,
    expiring,
    project_name,
    rates,
    when_text,
    worst_first,
)
from bot.core.gate import Gate, GateKind, GateState
from bot.core.markdown import clean
from bot.core.models import Acceptance, Reason
from bot.core.report import mr_url, pipeline_url
from bot.core.risk import utc_day


class Tone(StrEnum):
    """How a state or reason is coloured (each is a CSS class of the page)."""

    OK = "ok"
    BLOCK = "block"
    ERROR = "error"
    NEUTRAL = "neutral"  # canceled or skipped: nothing was built, nothing blocks
    PENDING = "pending"


def tone(reason: Reason) -> Tone:
    if reason is Reason.PASSED:
        return Tone.OK
    if reason is Reason.BLOCKED:
        return Tone.BLOCK
    # Every other failed status is the gate not getting a trustworthy answer: a setup problem to fix.
    return Tone.ERROR if reason.commit_state == "failed" else Tone.NEUTRAL


@dataclass(frozen=True)
class View:
    """What the page takes from the config."""

    gitlab_url: str
    stuck_after_s: float
    expiring_within_days: int


@dataclass(frozen=True)
class Snapshot:
    """What the web process read for one page (bot/web/dashboard.py); `project` set: that project's page."""

    open_gates: Sequence[Gate]  # the oldest open gates, as many as were read
    open_read: int  # open gate keys read (an expired gate's key counts too)
    open_total: int  # open gate keys in the store, read or not
    recent: Sequence[tuple[Gate, float]]  # finished merge gates and when their verdict was recorded
    counts: Mapping[int, Mapping[str, int]]  # project -> verdict reason -> merge gates over RATE_DAYS days
    exceptions: Sequence[tuple[int | None, Acceptance]]  # (project, exception); None: every project's
    project: int | None = None


@dataclass(frozen=True)
class Links:
    """Where a gate's row links to, built from the configured GitLab URL only (never a payload's URL)."""

    pipeline: str  # "" when the gate names no pipeline
    mr: str  # "" when it is not a merge request pipeline's gate


def links(gitlab_url: str, gate: Gate) -> Links:
    path = gate.project_path
    pipeline = pipeline_url(gitlab_url, path, gate.pipeline_id) if gate.pipeline_id > 0 else ""
    return Links(pipeline, mr_url(gitlab_url, path, gate.mr_iid) if gate.mr_iid > 0 else "")


@dataclass(frozen=True)
class GateRow:
    key: str
    project_id: int
    project: str
    image: str
    rescan: bool  # a [monitor] rescan of a watched digest, not a pipeline's gate
    state: str
    tone: Tone
    opened_at: float
    age: str
    idle: str  # since a poll or the sweep last looked at it
    stuck: str  # why it looks stuck; "" when it does not
    pipeline_id: int
    mr_iid: int
    links: Links


@dataclass(frozen=True)
class VerdictRow:
    key: str
    project_id: int
    project: str
    image: str
    reason: str
    tone: Tone
    summary: str
    finished_at: float
    finished: str
    ago: str
    pipeline_id: int
    mr_iid: int
    links: Links


@dataclass(frozen=True)
class Dashboard:
    generated: str
    project_id: int | None  # a project's page
    project: str
    open_gates: tuple[GateRow, ...]
    open_total: int
    open_read: int
    stuck: tuple[GateRow, ...]
    recent: tuple[VerdictRow, ...]
    rates: tuple[Rates, ...]
    expiring: tuple[ExpiringRow, ...]
    stuck_after: str
    expiring_within_days: int
    rate_days: int = RATE_DAYS

    @property
    def open_unread(self) -> int:
        """Open gates newer than the oldest `open_read`: counted, not shown."""
        return max(0, self.open_total - self.open_read)

    @property
    def empty(self) -> bool:
        """Nothing is known about the page's project (central exceptions aside)."""
        mine = [e for e in self.expiring if e.project_id is not None]
        return not (self.open_gates or self.recent or self.rates or mine)


def posted(gate: Gate) -> bool:
    """Its final status reached GitLab (a rescan posts none: the monitor marks it posted when done)."""
    return gate.verdict is not None and gate.posted_state == gate.verdict.reason.commit_state


def stuck_reason(gate: Gate, now: float, stuck_after_s: float) -> str:
    """Why a gate looks stuck, as the sweep sees it: a poll, a push job or a status overdue; "" if none is."""
    idle = now - (gate.last_progress or gate.created_at)
    if gate.state is GateState.POLLING:
        if idle > stuck_after_s:
            return f"no poll progress for {age_text(idle)}"
        late = now - gate.progress.deadline
        if gate.progress.deadline and late > stuck_after_s:
            return f"still polling {age_text(late)} past its deadline"
    elif gate.state is GateState.WAITING:
        waited = now - gate.created_at
        if waited > stuck_after_s:
            job = clean(gate.push_job, VALUE_LIMIT) or "its push job"
            return f"waiting {age_text(waited)} for {job} to succeed"
    elif not posted(gate) and idle > stuck_after_s:
        return f"verdict recorded, status not posted for {age_text(idle)}"
    return ""


def _project(gate: Gate) -> str:
    return clean(gate.project_path, PATH_LIMIT) or project_name({}, gate.project_id)


def _image(gate: Gate) -> str:
    tag = f":{gate.image.tag}" if gate.image.tag else ""
    return clean(gate.repository + tag, VALUE_LIMIT) or "(unnamed image)"


def _state(gate: Gate) -> tuple[str, Tone]:
    if gate.state is GateState.WAITING:
        return "waiting for the push", Tone.PENDING
    if gate.state is GateState.POLLING:
        status = clean(gate.progress.ecr_status, 40)
        return (f"scanning ({status})" if status else "scanning"), Tone.PENDING
    if gate.verdict is None:
        return "done without a verdict", Tone.ERROR
    label = gate.verdict.reason.value + ("" if posted(gate) else " · status not posted")
    return label, tone(gate.verdict.reason)


def gate_row(gate: Gate, now: float, view: View) -> GateRow:
    state, colour = _state(gate)
    return GateRow(
        key=gate.key,
        project_id=gate.project_id,
        project=_project(gate),
        image=_image(gate),
        rescan=gate.kind is GateKind.RESCAN,
        state=state,
        tone=colour,
        opened_at=gate.created_at,
        age=age_text(now - gate.created_at),
        idle=age_text(now - (gate.last_progress or gate.created_at)),
        stuck=stuck_reason(gate, now, view.stuck_after_s),
        pipeline_id=gate.pipeline_id,
        mr_iid=gate.mr_iid,
        links=links(view.gitlab_url, gate),
    )


def verdict_row(gate: Gate, finished_at: float, now: float, view: View) -> VerdictRow | None:
    """A finished gate's row; None for a gate that is no longer finished (an MR `recheck` reopened it)."""
    if gate.state is not GateState.DONE or gate.verdict is None:
        return None
    verdict = gate.verdict
    return VerdictRow(
        key=gate.key,
        project_id=gate.project_id,
        project=_project(gate),
        image=_image(gate),
        reason=verdict.reason.value,
        tone=tone(verdict.reason),
        summary=clean(verdict.summary, TEXT_LIMIT) or verdict.reason.value.replace("_", " "),
        finished_at=finished_at,
        finished=when_text(finished_at),
        ago=age_text(now - finished_at),
        pipeline_id=gate.pipeline_id,
        mr_iid=gate.mr_iid,
        links=links(view.gitlab_url, gate),
    )


def _paths(snapshot: Snapshot) -> dict[int, str]:
    """Each project's path as its newest gate names it (GitLab's own, confirmed by the worker)."""
    gates = sorted([*snapshot.open_gates, *(g for g, _ in snapshot.recent)], key=lambda g: g.created_at)
    return {g.project_id: _project(g) for g in gates}


def build(snapshot: Snapshot, view: View, now: float) -> Dashboard:
    """The page: open gates oldest first (the stuck among them), verdicts newest first, worst rates first."""

    def shown(project_id: int | None) -> bool:
        return snapshot.project is None or project_id is None or project_id == snapshot.project

    paths = _paths(snapshot)
    opened = sorted(
        (gate_row(g, now, view) for g in snapshot.open_gates if shown(g.project_id)),
        key=lambda r: (r.opened_at, r.key),
    )
    finished = [verdict_row(g, at, now, view) for g, at in snapshot.recent if shown(g.project_id)]
    recent = sorted((r for r in finished if r is not None), key=lambda r: (-r.finished_at, r.key))
    projects = [rates(p, project_name(paths, p), c) for p, c in snapshot.counts.items() if shown(p) and any(c.values())]
    mine = [(p, a) for p, a in snapshot.exceptions if shown(p)]
    page_project = snapshot.project
    return Dashboard(
        generated=when_text(now),
        project_id=page_project,
        project=project_name(paths, page_project) if page_project is not None else "",
        open_gates=tuple(opened),
        open_total=snapshot.open_total,
        open_read=snapshot.open_read,
        stuck=tuple(r for r in opened if r.stuck),
        recent=tuple(recent),
        rates=tuple(sorted(projects, key=worst_first)),
        expiring=expiring(mine, utc_day(now), view.expiring_within_days, paths),
        stuck_after=age_text(view.stuck_after_s),
        expiring_within_days=view.expiring_within_days,
    )
