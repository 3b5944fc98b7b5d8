"""Post a gate's commit status and rebuild MR notes from Redis: the reporting half of the tasks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.lock import Lock

from bot.core.errors import TransientError
from bot.core.gate import Gate, GateState
from bot.core.plan import NotGated
from bot.core.report import gate_status, mr_url, render_note, target_url
from workers.runtime import Runtime


@contextmanager
def holding(lock: Lock, settle_s: float) -> Iterator[None]:
    """Release an acquired lock on exit, except after an unanswered write (TransientError.uncertain).

    Then the write may still land at GitLab; the lock is kept for `settle_s` so that no other writer of the
    same status or note reads GitLab before it has, and posts a second one.
    """
    try:
        yield
    except TransientError as exc:
        if exc.uncertain and lock.owned():
            lock.extend(settle_s, replace_ttl=True)
            raise
        if lock.owned():
            lock.release()
        raise
    except BaseException:
        if lock.owned():
            lock.release()
        raise
    else:
        if lock.owned():
            lock.release()


def post_status(rt: Runtime, gate: Gate) -> None:
    """Post the status for the gate's current state, once. Caller holds the gate's status lock."""
    wanted = gate_status(gate)
    if gate.posted_state != wanted.state and not _already_posted(rt, gate, wanted.state):
        rt.store.set_posting(gate.key, wanted.state)
        # pipeline_id and no ref: a detached MR pipeline's ref is refs/merge-requests/<iid>/head, so a
        # branch ref would miss it and make a stray pipeline (GitLab API docs: commit statuses, `ref`).
        rt.gitlab.set_status(
            gate.project_id,
            gate.sha,
            {
                "state": wanted.state,
                "name": gate.status_name,
                "description": wanted.description,
                "target_url": target_url(rt.settings.gitlab.url, gate),
                "pipeline_id": gate.status_pipeline_id,
            },
        )
        rt.store.set_posted(gate.key, wanted.state)
    if gate.state is GateState.DONE and gate.noted:
        rt.store.forget_open(gate.key)  # nothing left to do: the sweep need not look at it again


def _already_posted(rt: Runtime, gate: Gate, state: str) -> bool:
    """After an attempt whose outcome is unknown (timeout, killed worker), ask GitLab before posting again.

    Re-posting a final state is not idempotent at GitLab: it makes a new status job that hides the
    first. Only a final post that was started and never confirmed costs this extra GET.
    """
    if gate.posting != state or state in ("pending", "running"):
        return False
    current = rt.gitlab.current_status(gate.project_id, gate.sha, gate.status_name, gate.status_pipeline_id)
    if current == state:
        rt.store.set_posted(gate.key, state)
        return True
    return False


def _newest_per_repository(gates: list[Gate]) -> list[Gate]:
    newest: dict[str, Gate] = {}
    for gate in gates:
        if gate.repository not in newest or gate.pipeline_id > newest[gate.repository].pipeline_id:
            newest[gate.repository] = gate
    return list(newest.values())


def _settle(rt: Runtime, gates: list[Gate]) -> None:
    """Record that these gates' verdicts reached the note; done gates with their status posted are closed."""
    for gate in gates:
        if gate.state is GateState.DONE:
            rt.store.mark_noted(gate.key)
            if gate.verdict is not None and gate.posted_state == gate.verdict.reason.commit_state:
                rt.store.forget_open(gate.key)


def refresh_notes(rt: Runtime, project_id: int, sha: str, pipeline_id: int, mr_iid: int, gate_key: str = "") -> bool:
    """Rewrite the note of each MR whose current head this commit is. True: a lock was busy, try later."""
    asked = rt.store.get(gate_key) if gate_key else None
    if mr_iid:
        latest_pipeline, latest_sha = rt.store.mr_latest(project_id, mr_iid)
        targets = [(mr_iid, latest_sha or sha, latest_pipeline or pipeline_id)]
        if latest_pipeline and pipeline_id < latest_pipeline:
            targets = []  # an older pipeline's late result: its status is posted, the note stays on the head
    else:
        mrs = rt.gitlab.merge_requests_for_commit(project_id, sha)
        targets = [(m.iid, sha, 0) for m in mrs if m.state == "opened" and m.sha == sha]
    if not targets:
        _settle(rt, [asked] if asked else [])  # no note shows this gate: nothing more to do for it
    for iid, head_sha, head_pipeline in targets:
        lock = rt.store.note_lock(project_id, iid)
        if not lock.acquire():
            return True
        with holding(lock, 2 * rt.settings.gitlab.timeout_s):
            gates = rt.store.gates_for_commit(project_id, head_sha)
            if head_pipeline:
                gates = [g for g in gates if g.status_pipeline_id == head_pipeline]
            gates = _newest_per_repository(gates)
            not_gated = _not_gated(rt, project_id, head_sha, head_pipeline, gates)
            audit = rt.store.audit(project_id, iid)
            if not gates and not not_gated and not audit:
                continue
            path = gates[0].project_path if gates else rt.gitlab.project_path(project_id)
            body = render_note(
                gates,
                project_path=path,
                sha=head_sha,
                max_listed=rt.settings.policy.max_listed,
                not_gated=not_gated,
                audit=audit,
                mr_url=mr_url(rt.settings.gitlab.url, path, iid),
            )
            rt.gitlab.upsert_note(project_id, iid, body)
            _settle(rt, gates)
    return False


def _not_gated(rt: Runtime, project_id: int, sha: str, head_pipeline: int, gates: list[Gate]) -> list[NotGated]:
    """Images the head pipeline (with its child pipelines) did not gate, for the note's "not gated" lines."""
    plans = rt.store.plans_for_commit(project_id, sha)
    report_to = head_pipeline or max((p.report_pipeline_id for p in plans), default=0)
    plans = [p for p in plans if p.report_pipeline_id == report_to]
    # A child pipeline may gate what its parent does not: listed only when no pipeline of the tree gates it.
    gated = {g.repository for g in gates}
    return sorted(
        {NotGated(r, job) for p in plans for r, job in p.not_gated if r not in gated}, key=lambda n: n.repository
    )
