"""Pure: a project's .gitlab/ecr-scan-gate.toml, checked against the central trust boundary, resolved to images."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from bot.core.models import Severity
from bot.core.policy import Policy
from bot.core.risk import BlockMode
from bot.core.settings import (
    Account,
    ExceptionSettings,
    ImageSettings,
    OptionalRegion,
    OptionalSeverities,
    PolicySettings,
    ProjectSettings,
    RegistrySettings,
    Repository,
    Tag,
)

REPO_FILE = ".gitlab/ecr-scan-gate.toml"
# A gate config is a few hundred bytes; a bigger file is a mistake (or an attack on the parser).
MAX_REPO_FILE_BYTES = 64 * 1024
FILE_KEY = "(file)"  # the Problem key of a problem with the whole file


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a gate config: `key` names the setting (images[0].region), `message` says what."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class _Strict(BaseModel):
    # A misspelt key in a repo file is a config error the author sees, not a setting silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RepoImage(_Strict):
    """An image a repo file declares. No role_arn: which role reaches which registry is the central config's."""

    repository: Repository  # no placeholders: the file belongs to one project
    tag: Tag = "{short_sha}"
    push_job: str = Field(min_length=1, max_length=255)
    required: StrictBool = False
    region: OptionalRegion = None
    registry_id: Account = None
    fail_on: OptionalSeverities = None


class RepoPolicy(_Strict):
    """A repo file's [policy]: unset keys are the org's; by default a set key may only be stricter."""

    fail_on: OptionalSeverities = None
    block_only_fixable: StrictBool | None = None
    min_cvss: float | None = Field(None, ge=0, le=10)
    block: BlockMode | None = None
    # Accepted risks of this project, within the org's limits ([policy] max_exception_days).
    exceptions: tuple[ExceptionSettings, ...] = ()


class RepoFile(_Strict):
    """The whole .gitlab/ecr-scan-gate.toml."""

    images: tuple[RepoImage, ...] = ()
    policy: RepoPolicy = RepoPolicy()

    @model_validator(mode="after")
    def _unique(self) -> RepoFile:
        seen = [i.repository for i in self.images]
        dupes = sorted({r for r in seen if seen.count(r) > 1})
        if dupes:
            raise ValueError(f"repositories declared twice: {', '.join(dupes)} (one [[images]] entry each)")
        return self


def _key(loc: tuple[int | str, ...]) -> str:
    """pydantic's ('images', 0, 'region') as the repo file's author writes it: images[0].region."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or FILE_KEY


def _problems(exc: ValidationError) -> tuple[Problem, ...]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        message = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
        out.append(Problem(_key(tuple(err["loc"])), message))
    return tuple(out)


def parse_repo_file(data: bytes) -> RepoFile | tuple[Problem, ...]:
    """The parsed file, or every problem found in it (each with its key)."""
    if len(data) > MAX_REPO_FILE_BYTES:
        return (Problem(FILE_KEY, f"larger than {MAX_REPO_FILE_BYTES // 1024} KiB ({len(data)} bytes)"),)
    try:
        raw: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return (Problem(FILE_KEY, "not UTF-8 text"),)
    except tomllib.TOMLDecodeError as exc:
        return (Problem(FILE_KEY, f"not valid TOML: {exc}"),)
    try:
        return RepoFile.model_validate(raw)
    except ValidationError as exc:
        return _problems(exc)


@dataclass(frozen=True)
class Resolved:
    """What a project's pipelines gate: its images (each with its effective fail_on) and policy, or problems."""

    images: tuple[ImageSettings, ...] = ()
    base: Policy = Policy()
    problems: tuple[Problem, ...] = ()
    source: str = "central config"

    def policy(self, image: ImageSettings) -> Policy:
        return replace(self.base, fail_on=image.fail_on or self.base.fail_on)


def _registry_for(project: ProjectSettings, image: RepoImage, i: int) -> tuple[RegistrySettings | None, Problem | None]:
    default = project.registries[0]
    registry_id = image.registry_id if image.registry_id is not None else default.registry_id
    region = image.region or (default.regions[0] if registry_id == default.registry_id else "")
    candidates = [r for r in project.registries if r.registry_id == registry_id]
    if not candidates:
        allowed = ", ".join(r.registry_id or "the bot's own account" for r in project.registries)
        return None, Problem(f"images[{i}].registry_id", f"{registry_id} is not allowed for this project ({allowed})")
    for registry in candidates:
        if region in registry.regions or not region:
            return registry, None
    regions = ", ".join(r for c in candidates for r in c.regions)
    return None, Problem(f"images[{i}].region", f"{region} is not allowed for this registry ({regions})")


def _stricter(key: str, fail_on: tuple[Severity, ...], org: tuple[Severity, ...]) -> Problem | None:
    dropped = [s.value for s in org if s not in fail_on]
    if not dropped:
        return None
    return Problem(key, f"drops {', '.join(dropped)} from the org's fail_on; the central config allows only stricter")


def _from_repo(
    project: ProjectSettings, org: PolicySettings, repo: RepoFile, central: Resolved, today: date
) -> Resolved:
    problems: list[Problem] = []
    relax = project.allow_relax
    policy, policy_problems = _repo_policy(repo.policy, org, relax, today)
    problems += policy_problems
    base = policy.fail_on
    images: list[ImageSettings] = []
    for i, image in enumerate(repo.images):
        registry, problem = _registry_for(project, image, i)
        if problem:
            problems.append(problem)
        fail_on = image.fail_on if image.fail_on is not None else base
        if image.fail_on is not None and not relax:
            problems += [p for p in [_stricter(f"images[{i}].fail_on", image.fail_on, org.fail_on)] if p]
        if registry is None:
            continue
        region = image.region or registry.regions[0]
        images.append(
            ImageSettings(
                repository=image.repository,
                tag=image.tag,
                push_job=image.push_job,
                required=image.required,
                registry_id=registry.registry_id,
                region=region,
                role_arn=registry.role_arn,
                fail_on=fail_on,
            )
        )
    if not repo.images:  # a repo file with only a [policy]: the central images under that policy
        images = list(_defaulted(central.images, base))
        problems += central.problems
    if problems:
        return Resolved(problems=tuple(problems), source=REPO_FILE)
    return Resolved(images=tuple(images), base=policy, source=REPO_FILE)


def _repo_policy(repo: RepoPolicy, org: PolicySettings, relax: bool, today: date) -> tuple[Policy, list[Problem]]:
    """The org policy with the repo file's [policy] over it; what relaxes it is a problem unless allowed."""
    rules = org.rules()
    problems: list[Problem] = []
    if repo.fail_on is not None and not relax:
        problems += [p for p in [_stricter("policy.fail_on", repo.fail_on, org.fail_on)] if p]
    laxer = {
        "block_only_fixable": repo.block_only_fixable is True and not org.block_only_fixable,
        "min_cvss": repo.min_cvss is not None and repo.min_cvss > org.min_cvss,
        "block": repo.block is BlockMode.NEW and org.block is BlockMode.ALL,
    }
    for key, is_laxer in laxer.items():
        if is_laxer and not relax:
            problems.append(Problem(f"policy.{key}", f"is laxer than the org's [policy] {key}; not allowed here"))
    latest = today + timedelta(days=org.max_exception_days)
    for i, exception in enumerate(repo.exceptions):
        if today != date.min and exception.expires > latest:
            problems.append(
                Problem(
                    f"policy.exceptions[{i}].expires",
                    f"{exception.expires.isoformat()} is more than {org.max_exception_days} days ahead "
                    f"(latest {latest.isoformat()})",
                )
            )
    policy = replace(
        rules,
        fail_on=repo.fail_on if repo.fail_on is not None else rules.fail_on,
        block_only_fixable=rules.block_only_fixable if repo.block_only_fixable is None else repo.block_only_fixable,
        min_cvss=rules.min_cvss if repo.min_cvss is None else repo.min_cvss,
        block=repo.block or rules.block,
        exceptions=rules.exceptions + tuple(e.acceptance(REPO_FILE) for e in repo.exceptions),
    )
    return policy, problems


def resolve(
    project: ProjectSettings,
    org: PolicySettings,
    project_path: str,
    repo: RepoFile | tuple[Problem, ...] | None,
    today: date = date.min,
) -> Resolved:
    """The images and policy of one project: from its repo file when it has one, else the central entry.

    `today` (UTC) bounds a repo file's exception dates (date.min: no bound is checked, e.g. for the doctor).
    """
    images: list[ImageSettings] = []
    problems: list[Problem] = []
    for i, image in enumerate(project.images):
        try:
            rendered = image.for_project(project_path)
        except ValueError as exc:
            problems.append(Problem(f"projects.images[{i}].repository", str(exc)))
            continue
        images.append(rendered)  # fail_on None: the policy's (the org's, or the repo file's) applies
    central = Resolved(images=tuple(images), base=org.rules(), problems=tuple(problems))
    if isinstance(repo, tuple):
        return Resolved(problems=repo, source=REPO_FILE)
    if repo is not None:
        return _from_repo(project, org, repo, central, today)
    if problems:
        return Resolved(problems=tuple(problems))
    return replace(central, images=_defaulted(central.images, org.fail_on))


def _defaulted(images: tuple[ImageSettings, ...], fail_on: tuple[Severity, ...]) -> tuple[ImageSettings, ...]:
    return tuple(i if i.fail_on is not None else i.model_copy(update={"fail_on": fail_on}) for i in images)


def policy_from_file(data: bytes, org: PolicySettings, today: date) -> Policy | tuple[Problem, ...]:
    """The CLI gate's `--policy FILE` (the repo file format; its [policy] table) over the org policy.

    In the pipeline the file is the team's own, so it may relax; the org's exception limit still holds.
    """
    parsed = parse_repo_file(data)
    if isinstance(parsed, tuple):
        return parsed
    policy, problems = _repo_policy(parsed.policy, org, relax=True, today=today)
    return tuple(problems) if problems else policy
