"""Repository contents of the fake GitLab: files stored per commit (doc/api/repository_files.md) and the CI
configuration per commit that the project CI lint answers for (doc/api/lint.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .gitlab_state import GitLabState, Project, User, insufficient_scope, locked, not_found, param_error

# lib/api/api.rb registers :api for every route and :read_api for GET/HEAD; lib/api/files.rb adds
# :read_repository (and :ai_workflows, which also needs Duo access and is not modelled) for its GET/HEAD routes,
# lib/api/lint.rb :ai_workflows for POST only. The *_LISTED tuples are what a 403 names, endpoint scopes first.
FILES_READ_SCOPES = frozenset({"api", "read_api", "read_repository"})
FILES_LISTED = ("read_repository", "ai_workflows", "api", "read_api")
LINT_READ_SCOPES = frozenset({"api", "read_api"})
LINT_LISTED = ("ai_workflows", "api", "read_api")

# lib/api/validations/validators/file_path.rb (Gitlab::PathTraversal) rejects these with this message.
INVALID_FILE_PATH = "file_path should be a valid file path"
# Gitlab::Ci::YamlProcessor#execute for a blank config (no .gitlab-ci.yml at the commit).
NO_CI_CONFIG = "Please provide content of .gitlab-ci.yml"
# Gitlab::Ci::Pipeline::Chain::Validate::Repository and Chain::Config::Content, met by a dry run.
REFERENCE_NOT_FOUND = "Reference not found"
MISSING_CI_CONFIG = "Missing CI config file"
# doc/api/lint.md's example of an invalid configuration: the default error of set_ci_config(valid=False).
DEFAULT_CI_ERROR = "jobs config should contain at least one visible job"

# doc/ci/yaml/_index.md: the stages without a `stages:` keyword, and the values of `when`.
DEFAULT_STAGES = (".pre", "build", "test", "deploy", ".post")
JOB_WHEN = ("on_success", "on_failure", "always", "manual", "delayed", "never")
JOB_KEYS = frozenset(
    (
        "name",
        "stage",
        "when",
        "script",
        "before_script",
        "after_script",
        "tags",
        "allow_failure",
        "environment",
        "needs",
    )
)
# Grape's Boolean coercion (dry-types Params::Bool); anything else is "<param> is invalid".
TRUE_VALUES = ("1", "on", "t", "true", "y", "yes")
FALSE_VALUES = ("0", "off", "f", "false", "n", "no")


def blob_id(data: bytes) -> str:
    """The git object id of a blob, as `git hash-object` computes it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's object id, not a security hash


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{what} must be a string or a list of strings")


@dataclass
class CiJob:
    name: str
    stage: str = "test"
    when: str = "on_success"
    script: list[str] = field(default_factory=list)
    before_script: list[str] = field(default_factory=list)
    after_script: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    allow_failure: bool | None = None
    environment: str | None = None
    needs: list[str] | None = None

    @classmethod
    def parse(cls, spec: str | dict[str, Any]) -> CiJob:
        if isinstance(spec, str):
            spec = {"name": spec}
        unknown = set(spec) - JOB_KEYS
        if unknown or not spec.get("name"):
            raise ValueError(f"a job is a name or a dict with name and some of {sorted(JOB_KEYS)}, not {spec!r}")
        job = cls(str(spec["name"]), str(spec.get("stage", "test")), str(spec.get("when", "on_success")))
        if job.when not in JOB_WHEN:
            raise ValueError(f"when must be one of {JOB_WHEN}, not {job.when!r}")
        job.script = _strings(spec.get("script", f"echo {job.name}"), "script")
        for key in ("before_script", "after_script", "tags"):
            setattr(job, key, _strings(spec.get(key, []), key))
        if spec.get("allow_failure") is not None:
            job.allow_failure = bool(spec["allow_failure"])
        if spec.get("environment") is not None:
            job.environment = str(spec["environment"])
        if spec.get("needs") is not None:
            job.needs = _strings(spec["needs"], "needs")
        return job

    @property
    def fails_allowed(self) -> bool:
        # doc/ci/yaml: allow_failure defaults to true for `when: manual` jobs (outside rules), false otherwise.
        return self.allow_failure if self.allow_failure is not None else self.when == "manual"

    def written(self) -> dict[str, Any]:
        """The job as a .gitlab-ci.yml would spell it (for merged_yaml)."""
        data: dict[str, Any] = {"stage": self.stage}
        for key in ("before_script", "script", "after_script", "tags"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.when != "on_success":
            data["when"] = self.when
        if self.allow_failure is not None:
            data["allow_failure"] = self.allow_failure
        if self.environment is not None:
            data["environment"] = self.environment
        if self.needs is not None:
            data["needs"] = self.needs
        return data


@dataclass
class CiConfig:
    jobs: list[CiJob]
    errors: list[str]
    declared_stages: list[str] | None = None  # the `stages:` keyword, if the config has one

    @property
    def stages(self) -> list[str]:
        # .pre and .post always exist, around the declared stages (or build, test, deploy).
        if self.declared_stages is None:
            return list(DEFAULT_STAGES)
        return [".pre", *(s for s in self.declared_stages if s not in (".pre", ".post")), ".post"]

    def stage_errors(self) -> list[str]:
        # Gitlab::Ci::YamlProcessor#validate_job_stage!
        available = ", ".join(self.stages)
        return [
            f"{j.name} job: chosen stage {j.stage} does not exist; available stages are {available}"
            for j in self.jobs
            if j.stage not in self.stages
        ]

    def merged_yaml(self) -> str:
        config: dict[str, Any] = {} if self.declared_stages is None else {"stages": self.declared_stages}
        config.update({j.name: j.written() for j in self.jobs})
        return "---\n" + _yaml(config, 0)

    def ordered_jobs(self) -> list[CiJob]:
        # Gitlab::Ci::Lint#yaml_processor_result_to_jobs: stage by stage, in definition order within a stage.
        stages = self.stages
        return sorted(self.jobs, key=lambda j: stages.index(j.stage) if j.stage in stages else len(stages))


_PLAIN = re.compile(r"[A-Za-z_./][\w ./-]*")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _PLAIN.fullmatch(text) and not text.endswith(" ") and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def _yaml(value: dict[str, Any], indent: int) -> str:
    """Block-style YAML the way Ruby's Psych writes a hash (sequences not indented under their key)."""
    pad = " " * indent
    out = []
    for key, item in value.items():
        if isinstance(item, dict):
            out.append(f"{pad}{_scalar(key)}:\n{_yaml(item, indent + 2)}")
        elif isinstance(item, list):
            out.append(f"{pad}{_scalar(key)}:\n" + "".join(f"{pad}- {_scalar(v)}\n" for v in item))
        else:
            out.append(f"{pad}{_scalar(key)}: {_scalar(item)}\n")
    return "".join(out)


def _boolean(query: dict[str, str], key: str, errors: list[str]) -> bool:
    value = query.get(key)
    if value is None:
        return False
    if value.lower() in TRUE_VALUES:
        return True
    if value.lower() not in FALSE_VALUES:
        errors.append(f"{key} is invalid")
    return False


class RepositoryState(GitLabState):
    """GitLabState plus repository files and CI configurations, each stored per commit sha.

    Nothing carries over from one commit to another: a file or CI config exists at exactly the commits it was
    set at. set_ci_config does not write a .gitlab-ci.yml file, nor does set_file(".gitlab-ci.yml") set a config.
    """

    repo_files: dict[int, dict[str, dict[str, bytes]]]  # project id -> sha -> path -> content
    ci_configs: dict[int, dict[str, CiConfig]]  # project id -> sha -> config

    @locked
    def reset(self) -> None:
        super().reset()
        self.repo_files = {}
        self.ci_configs = {}

    # --- control API ----------------------------------------------------------------------------------

    @locked
    def set_file(
        self, project_id: int, path: str, content: str | bytes, sha: str | None = None, branch: str | None = None
    ) -> dict[str, Any]:
        """Store a file (str content is stored utf-8) at commit `sha`, or at the head commit of `branch`."""
        project = self._project(project_id)
        commit = self._target_commit(project, sha, branch)
        clean = path.strip("/")
        if not clean or ".." in clean.split("/"):
            raise ValueError(f"not a repository path: {path!r}")
        data = content if isinstance(content, bytes) else str(content).encode()
        self.repo_files.setdefault(project.id, {}).setdefault(commit, {})[clean] = data
        return {"file_path": clean, "commit_id": commit, "blob_id": blob_id(data), "size": len(data)}

    @locked
    def delete_file(self, project_id: int, path: str, sha: str) -> None:
        files = self.repo_files.get(self._project(project_id).id, {}).get(sha, {})
        if path.strip("/") not in files:
            raise not_found("File")
        del files[path.strip("/")]

    @locked
    def set_ci_config(
        self,
        project_id: int,
        jobs: list[Any],
        sha: str | None = None,
        branch: str | None = None,
        valid: bool = True,
        errors: list[str] | None = None,
        stages: list[str] | None = None,
    ) -> dict[str, Any]:
        """The CI configuration at commit `sha` (or the head of `branch`): jobs are names or dicts with name and
        optionally stage ("test"), when ("on_success"), script, before_script, after_script, tags, allow_failure,
        environment, needs. `stages` is the config's `stages:` keyword (default: build, test, deploy); a job in
        another stage makes the config invalid, as on GitLab. valid=False makes the lint report `errors`
        (default: the doc's example error); GitLab's `valid` just means "no errors"."""
        project = self._project(project_id)
        commit = self._target_commit(project, sha, branch)
        if valid and errors:
            raise ValueError("a valid configuration has no errors")
        config = CiConfig([CiJob.parse(j) for j in jobs], [] if valid else list(errors or [DEFAULT_CI_ERROR]))
        config.declared_stages = None if stages is None else _strings(stages, "stages")
        config.errors += config.stage_errors()
        self.ci_configs.setdefault(project.id, {})[commit] = config
        return {"commit_id": commit, "valid": not config.errors, "jobs": [j.name for j in config.ordered_jobs()]}

    # --- rules behind the REST endpoints -------------------------------------------------------------

    @locked
    def get_file(
        self, user: User, project_ident: str, file_path: str, query: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """GET /projects/:id/repository/files/:file_path: the blob data with the content, and its headers."""
        info, data = self._blob(user, project_ident, file_path, query, raw=False)
        return {**info, "content": base64.b64encode(data).decode()}, self._blob_headers(info)

    @locked
    def head_file(self, user: User, project_ident: str, file_path: str, query: dict[str, str]) -> dict[str, str]:
        info, _ = self._blob(user, project_ident, file_path, query, raw=False)
        return self._blob_headers(info)

    @locked
    def raw_file(
        self, user: User, project_ident: str, file_path: str, query: dict[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        """GET .../files/:file_path/raw: ref is optional (the default branch's head) and a leading "/" is allowed."""
        info, data = self._blob(user, project_ident, file_path, query, raw=True)
        # WorkhorseHelper#send_git_blob: inline, with BlobHelper#safe_content_type (text or octet-stream).
        try:
            data.decode()
            is_text = b"\0" not in data
        except UnicodeDecodeError:
            is_text = False
        content_type = "text/plain; charset=utf-8" if is_text else "application/octet-stream"
        return data, {**self._blob_headers(info), "Content-Type": content_type, "Content-Disposition": "inline"}

    @locked
    def ci_lint(self, user: User, project_ident: str, query: dict[str, str]) -> dict[str, Any]:
        """GET /projects/:id/ci/lint, after lib/api/lint.rb and Gitlab::Ci::Lint (static check or dry run)."""
        self._require_scope(user, LINT_READ_SCOPES, LINT_LISTED)
        errors: list[str] = []  # Grape validates in declaration order and joins the messages
        if "sha" in query and "content_ref" in query:
            errors.append("sha, content_ref are mutually exclusive")
        dry_run = _boolean(query, "dry_run", errors)
        include_jobs = _boolean(query, "include_jobs", errors)
        if "ref" in query and "dry_run_ref" in query:
            errors.append("ref, dry_run_ref are mutually exclusive")
        if errors:
            raise param_error(", ".join(errors))
        project = self.find_project(project_ident)
        if not project.commits:
            raise not_found("Repository")  # user_project.empty_repo?
        # content_ref (or the deprecated sha) defaults to the default branch's head; an unknown ref, or a
        # default branch without a head, is `not_found! 'Commit'` (lib/api/lint.rb).
        commit = self._resolve_ref(project, query.get("content_ref") or query.get("sha"))
        if commit is None:
            raise not_found("Commit")
        config = self.ci_configs.get(project.id, {}).get(commit)
        if dry_run:
            result = self._simulate(project, config, query.get("dry_run_ref") or query.get("ref"))
        else:
            result = self._lint_result(config, [NO_CI_CONFIG], dry_run=False)
        if not include_jobs:
            del result["jobs"]  # Entities::Ci::Lint::Result exposes jobs only with include_jobs
        return result

    # --- helpers -------------------------------------------------------------------------------------

    def _require_scope(self, user: User, granting: frozenset[str], listed: tuple[str, ...]) -> None:
        if not granting & set(user.scopes):
            raise insufficient_scope(list(listed))

    def _target_commit(self, project: Project, sha: str | None, branch: str | None) -> str:
        if (sha is None) == (branch is None):
            raise ValueError("give exactly one of sha, branch")
        if sha is not None:
            self._remember_commit(project, sha)
            return sha
        head = project.branch_heads.get(str(branch))
        if head is None:
            raise ValueError(f"branch {branch!r} has no head commit (set_branch_head, add_commit or add_pipeline)")
        return head

    @staticmethod
    def _resolve_ref(project: Project, ref: str | None) -> str | None:
        """A known sha, a branch name (or refs/heads/<name>), or None/"HEAD" for the default branch's head."""
        if ref is None or ref == "HEAD":
            return project.branch_heads.get(project.default_branch)
        if ref in project.commits:
            return ref
        return project.branch_heads.get(ref.removeprefix("refs/heads/"))

    def _blob(
        self, user: User, project_ident: str, file_path: str, query: dict[str, str], raw: bool
    ) -> tuple[dict[str, Any], bytes]:
        """lib/api/files.rb: scopes, then the declared params, then assign_file_vars! and blob_data."""
        self._require_scope(user, FILES_READ_SCOPES, FILES_LISTED)
        errors = []
        if ".." in file_path.split("/") or (file_path.startswith("/") and not raw):
            errors.append(INVALID_FILE_PATH)  # the raw route has allow_initial_path_separator
        ref = query.get("ref")
        if ref is None and not raw:
            # `requires :ref, allow_blank: false`; the server drops blank params, so "ref=" also lands here
            # (GitLab would say "ref is empty").
            errors.append("ref is missing")
        if errors:
            raise param_error(", ".join(errors))
        project = self.find_project(project_ident)
        commit = self._resolve_ref(project, ref)
        if commit is None:
            raise not_found("Commit")  # assign_file_vars!: not_found!('Commit') unless @commit
        path = file_path.lstrip("/")
        data = self.repo_files.get(project.id, {}).get(commit, {}).get(path)
        if data is None:
            raise not_found("File")
        info = {
            "file_name": path.rsplit("/", 1)[-1],
            "file_path": path,
            "size": len(data),
            "encoding": "base64",
            "content_sha256": hashlib.sha256(data).hexdigest(),
            "ref": ref,
            "blob_id": blob_id(data),
            "commit_id": commit,
            # Files live at exactly one commit here, so that commit is the last one that touched them.
            "last_commit_id": commit,
            "execute_filemode": False,
        }
        return info, data

    @staticmethod
    def _blob_headers(info: dict[str, Any]) -> dict[str, str]:
        # API::Helpers::HeadersHelpers#set_http_headers: "X-Gitlab-" + each key Capitalized-And-Dashed, value.to_s.
        def text(value: Any) -> str:
            return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

        return {"X-Gitlab-" + "-".join(w.capitalize() for w in k.split("_")): text(v) for k, v in info.items()}

    def _simulate(self, project: Project, config: CiConfig | None, dry_run_ref: str | None) -> dict[str, Any]:
        """Gitlab::Ci::Lint#simulate_pipeline_creation: a push pipeline for dry_run_ref (default branch)."""
        ref = dry_run_ref or project.default_branch
        head = project.branch_heads.get(ref.removeprefix("refs/heads/"))
        if head is None:
            return self._lint_result(None, [REFERENCE_NOT_FOUND], dry_run=True)
        # No config at content_ref: the pipeline service reads the repository's config at the ref's head.
        return self._lint_result(
            config or self.ci_configs.get(project.id, {}).get(head), [MISSING_CI_CONFIG], dry_run=True
        )

    @staticmethod
    def _lint_result(config: CiConfig | None, missing: list[str], dry_run: bool) -> dict[str, Any]:
        if config is None:
            # No config was processed: no merged YAML and no includes (config_metadata is empty).
            return {
                "valid": False,
                "errors": missing,
                "warnings": [],
                "merged_yaml": None,
                "includes": None,
                "jobs": [],
            }
        jobs = [] if config.errors else config.ordered_jobs()
        return {
            "valid": not config.errors,
            "errors": list(config.errors),
            "warnings": [],
            "merged_yaml": config.merged_yaml(),
            "includes": [],
            "jobs": [RepositoryState._lint_job(j, dry_run) for j in jobs],
        }

    @staticmethod
    def _lint_job(job: CiJob, dry_run: bool) -> dict[str, Any]:
        # Gitlab::Ci::Lint#yaml_processor_result_to_jobs; a dry run (dry_run_convert_to_jobs) has no only,
        # except or needs.
        data: dict[str, Any] = {
            "name": job.name,
            "stage": job.stage,
            "before_script": list(job.before_script),
            "script": list(job.script),
            "after_script": list(job.after_script),
            "tag_list": list(job.tags),
            "only": {"refs": ["branches", "tags"]},  # the default of a job without only/except/rules
            "except": None,
            "environment": job.environment,
            "when": job.when,
            "allow_failure": job.fails_allowed,
            "needs": [{"name": n, "artifacts": True, "optional": False} for n in job.needs] if job.needs else None,
        }
        if dry_run:
            for key in ("only", "except", "needs"):
                del data[key]
        return data
