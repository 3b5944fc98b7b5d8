"""Pure: a gate (one image of one commit in one pipeline), its lifecycle states and its keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from bot.core.models import Image, Verdict
from bot.core.policy import Policy
from bot.core.poll import Progress


class GateState(StrEnum):
    """Lifecycle of one gate (image × commit × pipeline)."""

    WAITING = "waiting"  # pending status posted; the push job has not succeeded yet
    POLLING = "polling"  # the image was pushed; asking ECR for its scan
    DONE = "done"  # a verdict (or cancellation) is recorded; never changes again


class GateKind(StrEnum):
    MERGE = "merge"  # a pipeline's gate: its verdict is a commit status and the MR note
    RESCAN = "rescan"  # a watched digest scanned again: its verdict feeds the repository's GitLab issue


@dataclass(frozen=True)
class Gate:
    """One image of one commit in one pipeline, with everything its poll, status and note need."""

    project_id: int
    project_path: str
    sha: str
    ref: str
    pipeline_id: int
    image: Image  # pinned to its digest once ECR named one
    push_job: str
    status_name: str
    pipeline_url: str = ""
    source: str = ""
    mr_iid: int = 0  # 0: not a merge request pipeline (look the MR up by commit)
    # Where the status goes: a child pipeline's gate reports into its parent, the MR's pipeline. 0: pipeline_id.
    report_pipeline_id: int = 0
    # The policy resolved when the gate was made (central config or repo file); None: look it up (older gates).
    policy: Policy | None = None
    state: GateState = GateState.WAITING
    created_at: float = 0.0
    last_progress: float = 0.0  # last time a poll or the sweep looked at it
    poll_gen: int = 0  # the poll run allowed to go on (see the store's claim)
    progress: Progress = field(default_factory=Progress)
    posted_state: str = ""
    posting: str = ""  # the state of a status POST that was started; set before, cleared by posted_state
    noted: int = 0  # 1 once the MR note showed this gate's verdict (or there was no note to show it in)
    verdict: Verdict | None = None
    # [monitor]: once decided on a completed scan, its digest joins the watched set and is rescanned.
    watched: bool = False
    kind: GateKind = GateKind.MERGE

    @property
    def key(self) -> str:
        if self.kind is GateKind.RESCAN:
            return rescan_key(self.project_id, self.image.repository, self.image.digest)
        return gate_key(self.project_id, self.pipeline_id, self.image.repository)

    @property
    def repository(self) -> str:
        return self.image.repository

    @property
    def status_pipeline_id(self) -> int:
        """The pipeline whose "Pipelines must succeed" this gate's status must hold."""
        return self.report_pipeline_id or self.pipeline_id


def gate_key(project_id: int, pipeline_id: int, repository: str) -> str:
    """A gate's key, relative to the store's prefix (so several deployments can share one Redis)."""
    return f"gate:{project_id}:{pipeline_id}:{repository}"


def rescan_key(project_id: int, repository: str, digest: str) -> str:
    """One rescan per watched digest at a time (a new one starts only once the last is done)."""
    return f"rescan:{project_id}:{repository}:{digest}"


def merge_gate_project(key: str) -> int | None:
    """The project of a merge gate's key (see gate_key); None for any other key (a rescan's)."""
    kind, _, rest = key.partition(":")
    project = rest.partition(":")[0]
    return int(project) if kind == "gate" and project.isdigit() else None


def commit_key(project_id: int, sha: str) -> str:
    return f"commit:{project_id}:{sha}"
