"""The repo file .gitlab/ecr-scan-gate.toml: parsing, every problem named by key, the central trust boundary."""

from __future__ import annotations

from datetime import date

import pytest

from bot.core.models import Severity
from bot.core.repo_config import FILE_KEY, MAX_REPO_FILE_BYTES, Problem, RepoFile, parse_repo_file, resolve
from bot.core.risk import BlockMode
from bot.core.settings import PolicySettings, ProjectSettings

ORG = PolicySettings.model_validate(
    {
        "fail_on": ["CRITICAL", "HIGH"],
        "exceptions": [{"id": "CVE-2020-0001", "reason": "org-wide", "expires": date(2099, 1, 1)}],
        "max_exception_days": 90,
    }
)
TODAY = date(2026, 12, 3)
ACCOUNT = "123456789012"
OTHER = "210987654321"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecr-scan-gate"


def project(**kw: object) -> ProjectSettings:
    base: dict[str, object] = {
        "path": "acme/*",
        "registries": [
            {"registry_id": ACCOUNT, "regions": ["eu-west-1", "us-east-1"], "role_arn": ROLE},
            {"regions": ["us-east-1"]},
        ],
    }
    return ProjectSettings.model_validate(base | kw)


def parsed(text: str) -> RepoFile:
    result = parse_repo_file(text.encode())
    assert isinstance(result, RepoFile), result
    return result


def problems(text: str) -> dict[str, str]:
    result = parse_repo_file(text.encode())
    assert isinstance(result, tuple), result
    return {p.key: p.message for p in result}


MONOREPO = """
[[images]]
repository = "payments-api"
push_job = "push-api"
required = true

[[images]]
repository = "payments-worker"
tag = "worker-{short_sha}"
push_job = "push-worker"
region = "us-east-1"

[[images]]
repository = "tools/migrate"
push_job = "push-migrate"
registry_id = "123456789012"
region = "eu-west-1"
"""


def test_a_monorepo_file_resolves_to_its_images_with_the_registry_role() -> None:
    resolved = resolve(project(), ORG, "acme/payments", parsed(MONOREPO))
    assert resolved.problems == ()
    assert resolved.source == ".gitlab/ecr-scan-gate.toml"
    by_repo = {i.repository: i for i in resolved.images}
    assert list(by_repo) == ["payments-api", "payments-worker", "tools/migrate"]
    api = by_repo["payments-api"]
    # No region/registry: the first allowed registry and its first region; the role comes from central config.
    assert (api.registry_id, api.region, api.role_arn, api.required) == (ACCOUNT, "eu-west-1", ROLE, True)
    assert (by_repo["payments-worker"].tag, by_repo["payments-worker"].region) == ("worker-{short_sha}", "us-east-1")
    assert by_repo["payments-worker"].role_arn == ROLE
    assert resolved.policy(api).fail_on == (Severity.CRITICAL, Severity.HIGH)
    assert [a.id for a in resolved.policy(api).exceptions] == ["CVE-2020-0001"]


def test_the_bots_own_account_when_the_file_names_no_registry_and_that_is_first() -> None:
    own_first = project(registries=[{"regions": ["us-east-1"]}])
    (image,) = resolve(own_first, ORG, "acme/p", parsed('[[images]]\nrepository = "a"\npush_job = "p"\n')).images
    assert (image.registry_id, image.region, image.role_arn) == (None, "us-east-1", None)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            '[[images]]\nrepository = "a"\npush_job = "p"\nregistry_id = "210987654321"\n',
            "images[0].registry_id",
            "not allowed",
        ),
        ('[[images]]\nrepository = "a"\npush_job = "p"\nregion = "ap-south-1"\n', "images[0].region", "not allowed"),
        ('[policy]\nfail_on = ["CRITICAL"]\n', "policy.fail_on", "drops HIGH"),
        ("[policy]\nblock_only_fixable = true\n", "policy.block_only_fixable", "laxer"),
        ("[policy]\nmin_cvss = 7.0\n", "policy.min_cvss", "laxer"),
        ('[policy]\nblock = "new"\n', "policy.block", "laxer"),
        (
            '[[policy.exceptions]]\nid = "CVE-1"\nreason = "r"\nexpires = 2027-03-04\n',
            "policy.exceptions[0].expires",
            "more than 90 days ahead (latest 2027-03-03)",
        ),
        ('[[images]]\nrepository = "a"\npush_job = "p"\nfail_on = "CRITICAL"\n', "images[0].fail_on", "drops HIGH"),
    ],
)
def test_what_a_repo_file_may_not_ask_for_is_a_problem_with_its_key(text: str, key: str, words: str) -> None:
    resolved = resolve(project(), ORG, "acme/p", parsed(text), TODAY)
    assert resolved.images == ()
    assert key in {p.key for p in resolved.problems}
    assert words in next(p.message for p in resolved.problems if p.key == key)


def test_allow_relax_lets_a_repo_file_relax_the_org_policy() -> None:
    text = '[policy]\nfail_on = ["CRITICAL"]\nblock_only_fixable = true\nmin_cvss = 7.5\nblock = "new"\n'
    resolved = resolve(project(allow_relax=True, images=[{"repository": "{project_name}", "push_job": "push"}]), ORG,
                       "acme/shop", parsed(text))  # fmt: skip
    assert resolved.problems == ()
    (image,) = resolved.images  # a file with only [policy]: the central images under that policy
    assert image.repository == "shop"
    policy = resolved.policy(image)
    assert (policy.fail_on, policy.block_only_fixable, policy.min_cvss, policy.block) == (
        (Severity.CRITICAL,),
        True,
        7.5,
        BlockMode.NEW,
    )


def test_a_stricter_policy_needs_no_permission() -> None:
    text = '[policy]\nfail_on = ["CRITICAL", "HIGH", "MEDIUM"]\n'
    text += '[[policy.exceptions]]\nid = "CVE-2024-1"\nreason = "not reachable"\nexpires = 2027-03-03\nby = "@a"\n'
    resolved = resolve(project(images=[{"repository": "x", "push_job": "p"}]), ORG, "acme/x", parsed(text), TODAY)
    assert resolved.problems == ()
    policy = resolved.policy(resolved.images[0])
    assert policy.fail_on == (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM)
    assert [(a.id, a.source, a.by) for a in policy.exceptions] == [
        ("CVE-2020-0001", "central config", ""),
        ("CVE-2024-1", ".gitlab/ecr-scan-gate.toml", "@a"),
    ]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[[images]]\nrepository = "a"\npush_job = "p"\nrole_arn = "arn:x"\n', "images[0].role_arn", "unknown key"),
        ('[[images]]\nrepository = "Bad_Name"\npush_job = "p"\n', "images[0].repository", "not a valid ECR"),
        ('[[images]]\nrepository = "{project_name}"\npush_job = "p"\n', "images[0].repository", "placeholders"),
        ('[[images]]\nrepository = "a"\n', "images[0].push_job", "Field required"),
        ('[[images]]\nrepository = "a"\npush_job = "p"\ntag = "{branch}"\n', "images[0].tag", "unknown placeholders"),
        ('[[images]]\nrepository = "a"\npush_job = "p"\nregion = "mars"\n', "images[0].region", "AWS region"),
        ('[[images]]\nrepository = "a"\npush_job = "p"\nrequired = "yes"\n', "images[0].required", "boolean"),
        ('[policy]\nfail_on = ["SEVERE"]\n', "policy.fail_on", "unknown severities"),
        ("[polcy]\n", "polcy", "unknown key"),
        (
            '[[images]]\nrepository = "a"\npush_job = "p"\n[[images]]\nrepository = "a"\npush_job = "q"\n',
            FILE_KEY,
            "declared twice",
        ),  # fmt: skip
        ("images = [", FILE_KEY, "not valid TOML"),
    ],
)
def test_an_invalid_file_names_each_problem_by_key(text: str, key: str, words: str) -> None:
    found = problems(text)
    assert key in found, found
    assert words in found[key]


def test_all_problems_are_listed_at_once() -> None:
    found = problems('[[images]]\nrepository = "A"\npush_job = ""\nzone = 1\n[policy]\nfail_on = ["X"]\n')
    assert set(found) == {"images[0].repository", "images[0].push_job", "images[0].zone", "policy.fail_on"}


def test_a_huge_or_binary_file_is_refused_before_parsing() -> None:
    (big,) = parse_repo_file(b"#" * (MAX_REPO_FILE_BYTES + 1))  # type: ignore[misc]
    assert big == Problem(FILE_KEY, f"larger than 64 KiB ({MAX_REPO_FILE_BYTES + 1} bytes)")
    (binary,) = parse_repo_file(b"\xff\xfe[[images]]")  # type: ignore[misc]
    assert binary.message == "not UTF-8 text"


def test_no_repo_file_is_the_central_config_with_templated_images() -> None:
    central = project(images=[{"repository": "{group}/{project_name}", "push_job": "push", "fail_on": "CRITICAL"}])
    resolved = resolve(central, ORG, "acme/team/shop", None)
    (image,) = resolved.images
    assert (image.repository, resolved.source) == ("acme/team/shop", "central config")
    assert resolved.policy(image).fail_on == (Severity.CRITICAL,)


def test_a_template_that_gives_an_invalid_name_is_a_config_problem() -> None:
    central = project(images=[{"repository": "{project_name}", "push_job": "push"}])
    resolved = resolve(central, ORG, "acme/My_Shop", None)
    assert resolved.images == ()
    assert [p.key for p in resolved.problems] == ["projects.images[0].repository"]
    assert "not a valid ECR repository name" in resolved.problems[0].message


def test_a_parse_failure_passes_through_as_problems() -> None:
    bad = (Problem(FILE_KEY, "not valid TOML: x"),)
    resolved = resolve(project(images=[{"repository": "a", "push_job": "p"}]), ORG, "acme/a", bad)
    assert (resolved.images, resolved.problems) == ((), bad)


def test_central_config_keeps_its_own_validation() -> None:
    with pytest.raises(ValueError, match="unknown placeholders"):
        ProjectSettings.model_validate({"path": "a/*", "images": [{"repository": "{team}", "push_job": "p"}]})
    with pytest.raises(ValueError, match="needs `images`, or `repo_file = true`"):
        ProjectSettings.model_validate({"path": "a/*", "repo_file": False})
    with pytest.raises(ValueError, match="12-digit"):
        ProjectSettings.model_validate({"path": "a/*", "registries": [{"registry_id": OTHER[:5]}]})
