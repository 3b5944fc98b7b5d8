"""`doctor`: ECR setup against moto (scan on push, registry rules, mutability, IAM) and GitLab against FakeGitLab."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

from bot import cli
from bot.core.coverage import filter_matches
from tests import configs
from tests.fakes.ecr import EcrDouble
from tests.fakes.gitlab import FakeGitLab
from tests.harness import point_boto3_at

SECRET = "webhook-secret-value"
MAIN_SHA = "c0ffee" + "0" * 34  # the head of grp/app's default branch
STAGES = ["build", "test", "push"]
GROUP_ID, PROJECT_ID = 10, 1
# moto's state is one per process and shared with the session's double: a region of our own keeps our
# repositories and registry scanning rules away from other tests (IAM is global, hence unique user names).
REGION = "eu-north-1"


def _moto_auth(double: EcrDouble, count: str) -> None:
    # moto evaluates IAM policies once INITIAL_NO_AUTH_ACTION_COUNT calls have passed; this route resets it.
    request = urllib.request.Request(
        f"{double.moto_url}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextmanager
def restricted_credentials(double: EcrDouble, monkeypatch: pytest.MonkeyPatch, actions: list[str]) -> Iterator[None]:
    """boto3 runs as an IAM user allowed only `actions`, with moto enforcing IAM for the duration."""
    iam = boto3.client(
        "iam",
        endpoint_url=double.moto_url,
        region_name=double.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    user = f"gate-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": [*actions, "sts:GetCallerIdentity"], "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="gate", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    with monkeypatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        m.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        m.setattr(boto3, "DEFAULT_SESSION", None)
        _moto_auth(double, "0")
        try:
            yield
        finally:
            _moto_auth(double, "inf")


def clean_region(double: EcrDouble) -> None:
    """Empty the double's region in moto without resetting moto for everyone else."""
    client = double.client()
    for repo in client.describe_repositories()["repositories"]:
        client.delete_repository(repositoryName=repo["repositoryName"], force=True)
    client.put_registry_scanning_configuration(scanType="BASIC", rules=[])
    double.clear_calls()  # set-up is not traffic a test should count


@pytest.fixture(scope="module")
def double() -> Iterator[EcrDouble]:
    with EcrDouble(region=REGION) as started:
        yield started


@pytest.fixture(scope="module")
def gitlab_server() -> Iterator[FakeGitLab]:
    with FakeGitLab() as started:
        yield started


@pytest.fixture
def ecr(double: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> EcrDouble:
    double.reset()
    clean_region(double)
    point_boto3_at(double.env(), monkeypatch)
    monkeypatch.delenv("ECR_GATE_CONFIG", raising=False)
    return double


@pytest.fixture
def gl(gitlab_server: FakeGitLab) -> FakeGitLab:
    """grp/app in group grp, with a group webhook sending pipeline and job events."""
    gitlab_server.reset()
    gitlab_server.add_group(GROUP_ID, "grp")
    gitlab_server.add_project(PROJECT_ID, "grp/app", namespace_id=GROUP_ID)
    gitlab_server.add_commit(PROJECT_ID, MAIN_SHA, branches=["main"])
    gitlab_server.set_branch_head(PROJECT_ID, "main", MAIN_SHA)
    gitlab_server.set_ci_config(PROJECT_ID, [{"name": "docker-push", "stage": "push"}], sha=MAIN_SHA, stages=STAGES)
    return gitlab_server


def add_hook(gl: FakeGitLab, **kwargs) -> None:
    args = {"url": "https://gate.example.com/webhook", "pipeline_events": True, "job_events": True, "token": SECRET}
    gl.add_hook(**{**args, **kwargs})


def write_config(tmp_path: Path, gl: FakeGitLab, repositories: list[str], project: str = "grp/app") -> str:
    images = [{"repository": r, "push_job": "docker-push", "region": REGION} for r in repositories]
    return str(
        configs.write_config(
            tmp_path / "config.toml",
            defaults=False,
            gitlab={"url": gl.url},
            projects=[{"path": project, "images": images}],
        )
    )


def doctor(config: str, gl: FakeGitLab, *extra: str, **env: str) -> int:
    base = {**os.environ, "GITLAB_TOKEN": gl.token, "GITLAB_WEBHOOK_SECRET": SECRET}
    return cli.main(["doctor", "--config", config, *extra], env={k: v for k, v in {**base, **env}.items() if v})


def lines(text: str, level: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(level)]


def test_healthy_setup_passes(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 0

    out = capsys.readouterr().out
    assert lines(out, "FAIL") == [] and lines(out, "WARN") == []
    assert "token valid (user @ecr-scan-gate-bot" in out
    assert "is Maintainer: can post commit statuses and MR notes" in out
    assert "webhook https://gate.example.com/webhook on grp sends pipeline and job events" in out
    assert "scans run: BASIC scanning on push (repository scanOnPush=true)" in out
    assert "tags are IMMUTABLE" in out
    assert "the credentials can call ecr:DescribeImageScanFindings" in out
    assert "the credentials can call ecr:DescribeImages" in out
    assert gl.token not in out and SECRET not in out
    assert "doctor: " in out and " 0 failed" in out


def test_scan_on_push_off_fails_with_the_command(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=False, mutability="IMMUTABLE")
    add_hook(gl, project_id=PROJECT_ID)

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 1

    out = capsys.readouterr().out
    assert lines(out, "FAIL") == [
        "FAIL  ecr app: scan on push is off (repository scanOnPush=false, no BASIC registry "
        "rule matches): no scan will run and every gate ends in scan_not_found"
    ]
    assert (
        "fix: aws ecr put-image-scanning-configuration --repository-name app "
        f"--image-scanning-configuration scanOnPush=true --region {REGION}"
    ) in out


def test_basic_registry_rule_counts_as_scan_on_push(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=False, mutability="IMMUTABLE")
    ecr.client().put_registry_scanning_configuration(
        scanType="BASIC",
        rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "ap*", "filterType": "WILDCARD"}]}],
    )
    add_hook(gl, group_id=GROUP_ID)

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 0
    assert "scans run: BASIC scanning, registry rule SCAN_ON_PUSH filter 'ap*'" in capsys.readouterr().out


def test_enhanced_scanning_needs_a_matching_rule(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")  # ignored under ENHANCED
    ecr.create_repository("web", scan_on_push=False, mutability="IMMUTABLE")
    ecr.client().put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[
            {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": [{"filter": "web", "filterType": "WILDCARD"}]}
        ],
    )
    add_hook(gl, group_id=GROUP_ID)

    assert doctor(write_config(tmp_path, gl, ["app", "web"]), gl) == 1

    out = capsys.readouterr().out
    assert "PASS  ecr web: scans run: ENHANCED (Amazon Inspector) scanning, registry rule CONTINUOUS_SCAN" in out
    assert "FAIL  ecr app: the registry uses ENHANCED scanning and no rule matches this repository" in out
    assert "aws ecr put-registry-scanning-configuration --scan-type ENHANCED" in out


def test_mutable_tags_warn_but_pass(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="MUTABLE")
    add_hook(gl, group_id=GROUP_ID)

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 0

    out = capsys.readouterr().out
    assert lines(out, "WARN")[0].startswith("WARN  ecr app: tags are MUTABLE")
    assert "fix: aws ecr put-image-tag-mutability --repository-name app --image-tag-mutability IMMUTABLE" in out


def test_missing_repository(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    add_hook(gl, group_id=GROUP_ID)

    assert doctor(write_config(tmp_path, gl, ["ghost"]), gl) == 1

    out = capsys.readouterr().out
    assert f"FAIL  ecr ghost: repository not found in {REGION}" in out
    assert "aws ecr create-repository --repository-name ghost" in out


def test_credentials_lacking_an_action(ecr: EcrDouble, gl: FakeGitLab, tmp_path, monkeypatch, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    config = write_config(tmp_path, gl, ["app"])
    allowed = ["ecr:DescribeRepositories", "ecr:GetRegistryScanningConfiguration", "ecr:DescribeImageScanFindings"]

    with restricted_credentials(ecr, monkeypatch, allowed):
        assert doctor(config, gl, "--start-scan") == 1

    out = capsys.readouterr().out
    assert "PASS  ecr app: the credentials can call ecr:DescribeImageScanFindings" in out
    assert "FAIL  ecr app: the credentials cannot call ecr:DescribeImages (AccessDenied)" in out
    assert "FAIL  ecr app: the credentials cannot call ecr:StartImageScan (AccessDenied)" in out
    assert f"allow ecr:DescribeImages on arn:aws:ecr:{REGION}:123456789012:repository/app" in out
    assert "credentials found: arn:aws:iam::123456789012:user/gate-" in out


def test_credentials_that_cannot_read_the_repository(
    ecr: EcrDouble, gl: FakeGitLab, tmp_path, monkeypatch, capsys
) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    config = write_config(tmp_path, gl, ["app"])

    with restricted_credentials(ecr, monkeypatch, ["ecr:DescribeImageScanFindings", "ecr:DescribeImages"]):
        assert doctor(config, gl) == 1

    out = capsys.readouterr().out
    assert "cannot call ecr:DescribeRepositories (AccessDenied)" in out
    assert "the credentials can call ecr:DescribeImages" in out


def test_no_aws_credentials(ecr: EcrDouble, gl: FakeGitLab, tmp_path, monkeypatch, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True)
    add_hook(gl, group_id=GROUP_ID)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 1
    assert f"FAIL  aws {REGION}: no AWS credentials found" in capsys.readouterr().out


def test_missing_webhook(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 1

    out = capsys.readouterr().out
    assert lines(out, "FAIL") == [
        "FAIL  gitlab grp/app: no webhook sends pipeline events to the bot: no gate will start"
    ]
    assert f'"{gl.url}/api/v4/projects/grp%2Fapp/hooks"' in out
    assert "pipeline_events=true&job_events=true" in out and "token=$GITLAB_WEBHOOK_SECRET" in out
    assert gl.token not in out


def test_webhook_without_pipeline_events_fails(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, project_id=PROJECT_ID, pipeline_events=False, job_events=True)

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 1
    assert "no webhook sends pipeline events" in capsys.readouterr().out


def test_webhook_without_job_events_and_tls_warns(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, project_id=PROJECT_ID, url="http://user:pw@gate.example.com/webhook?x=1", job_events=False)

    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 0

    out = capsys.readouterr().out
    warns = lines(out, "WARN")
    assert any("sends pipeline events but not job events" in w for w in warns)
    assert any("secret token is sent without verified TLS" in w for w in warns)
    assert "pw@" not in out and "x=1" not in out  # hook URLs are shown without credentials or query


def test_token_problems(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    config = write_config(tmp_path, gl, ["app"])

    gl.set_token_scopes(["read_api"])
    assert doctor(config, gl) == 1
    assert "token scopes ['read_api'] lack api" in capsys.readouterr().out

    assert doctor(config, gl, GITLAB_TOKEN="glpat-wrong-token-000000") == 1
    out = capsys.readouterr().out
    assert "refused the token (401)" in out and "glpat-wrong" not in out

    assert doctor(config, gl, GITLAB_TOKEN="", GITLAB_WEBHOOK_SECRET="") == 1
    out = capsys.readouterr().out
    assert "FAIL  gitlab: GITLAB_TOKEN is not set" in out
    assert "FAIL  gitlab: GITLAB_WEBHOOK_SECRET is not set" in out


def test_unknown_project_and_unreachable_gitlab(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    assert doctor(write_config(tmp_path, gl, ["app"], project="grp/other"), gl) == 1
    assert "FAIL  gitlab grp/other: project not visible to @ecr-scan-gate-bot (404)" in capsys.readouterr().out

    config = configs.write_config(
        tmp_path / "down.toml", defaults=False, gitlab={"url": "http://127.0.0.1:9", "timeout_s": 2}
    )
    assert doctor(str(config), gl) == 1
    assert "http://127.0.0.1:9 not reachable" in capsys.readouterr().out


def test_glob_project_checks_group_hooks(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)

    assert doctor(write_config(tmp_path, gl, ["app"], project="grp/*"), gl) == 0
    assert "PASS  gitlab grp/*: webhook https://gate.example.com/webhook on grp" in capsys.readouterr().out


def test_config_error_exit_3(tmp_path, capsys) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[gitlab]\nurl = "ftp://x"\ntoken = "oops"\n')
    assert cli.main(["doctor", "--config", str(bad)], env={}) == 3
    err = capsys.readouterr().err
    assert "secrets are read from the environment only" in err and "oops" not in err


@pytest.mark.parametrize(
    ("pattern", "repository", "matches"),
    [
        ("app", "app", True),
        ("app", "team/app-api", True),
        ("ap*", "app", True),
        ("*-api", "team/app-api", True),
        ("prod-*", "app", False),
        ("web", "app", False),
        ("a*p", "app", True),
        ("a.p", "app", False),
    ],
)
def test_filter_matches(pattern: str, repository: str, matches: bool) -> None:
    assert filter_matches(pattern, repository) is matches


# --- repo files ---------------------------------------------------------------------------------------------


def test_a_valid_repo_file_and_its_push_jobs_pass(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    gl.set_file(
        PROJECT_ID,
        ".gitlab/ecr-scan-gate.toml",
        '[[images]]\nrepository = "svc"\npush_job = "docker-push"\n',
        sha=MAIN_SHA,
    )
    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 0
    out = capsys.readouterr().out
    assert "INFO  repo grp/app: read .gitlab/ecr-scan-gate.toml on main" in out
    assert "PASS  repo grp/app: .gitlab/ecr-scan-gate.toml is valid and allowed: gates svc" in out
    assert "PASS  repo grp/app: push job docker-push of svc is in the CI config on main" in out


def test_a_push_job_missing_from_the_ci_config_fails(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    gl.set_ci_config(PROJECT_ID, [{"name": "build-image", "stage": "build"}], sha=MAIN_SHA, stages=STAGES)
    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 1
    out = capsys.readouterr().out
    assert lines(out, "FAIL") == [
        "FAIL  repo grp/app: push job docker-push of app is not a job of the CI config on main: never gated"
    ]
    assert "(CI lint lists: build-image)" in out
    assert "no .gitlab/ecr-scan-gate.toml on main: the central config's images apply" in out


def test_a_repo_file_that_asks_for_too_much_fails(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    text = '[[images]]\nrepository = "svc"\npush_job = "docker-push"\nregistry_id = "999988887777"\n'
    text += "[policy]\nfail_on = []\n"
    gl.set_file(PROJECT_ID, ".gitlab/ecr-scan-gate.toml", text, sha=MAIN_SHA)
    assert doctor(write_config(tmp_path, gl, ["app"]), gl) == 1
    (fail,) = lines(capsys.readouterr().out, "FAIL")
    assert fail.startswith("FAIL  repo grp/app: config error, every pipeline will fail: ")
    assert "policy.fail_on: drops CRITICAL, HIGH from the org's fail_on" in fail
    assert "images[0].registry_id: 999988887777 is not allowed for this project" in fail


def test_a_glob_entry_checks_each_project_it_matches(ecr: EcrDouble, gl: FakeGitLab, tmp_path, capsys) -> None:
    ecr.create_repository("app", scan_on_push=True, mutability="IMMUTABLE")
    add_hook(gl, group_id=GROUP_ID)
    gl.add_group(GROUP_ID + 1, "grp/team")
    gl.add_project(2, "grp/team/web", namespace_id=GROUP_ID + 1)
    gl.add_project(3, "elsewhere/x")
    gl.set_file(PROJECT_ID, ".gitlab/ecr-scan-gate.toml", "[[images]]\nrepository = 'svc'\n", sha=MAIN_SHA)
    assert doctor(write_config(tmp_path, gl, ["app"], project="grp/*"), gl) == 1
    out = capsys.readouterr().out
    assert "INFO  gitlab grp/*: matches 2 projects" in out
    assert "PASS  gitlab grp/app: @ecr-scan-gate-bot is Maintainer" in out
    assert "PASS  gitlab grp/team/web: @ecr-scan-gate-bot is Maintainer" in out
    assert "FAIL  repo grp/app: config error, every pipeline will fail: images[0].push_job: Field required" in out
    # grp/team/web has no repo file and no commits: the central image, and CI lint cannot answer.
    assert "INFO  repo grp/team/web: no .gitlab/ecr-scan-gate.toml on main: the central config's images apply" in out
    assert "elsewhere/x" not in out


def test_doctor_says_who_can_read_metrics_and_the_dashboard(tmp_path) -> None:
    from bot.cli.doctor.main import operations_lines
    from bot.config import load_settings
    from bot.core.ops_settings import DASHBOARD_PASSWORD_ENV, METRICS_TOKEN_ENV
    from tests import configs

    path = configs.write_config(tmp_path / "ops.toml", dashboard={"enabled": True})

    def lines(**env: str) -> list[tuple[str, str]]:
        settings = load_settings(path, env, require_secrets=False)
        return [(line.level.value, line.subject) for line in operations_lines(settings)]

    assert lines() == [("INFO", "metrics"), ("FAIL", "dashboard")]
    assert lines(**{DASHBOARD_PASSWORD_ENV: "short"}) == [("INFO", "metrics"), ("WARN", "dashboard")]
    strong = {DASHBOARD_PASSWORD_ENV: "x" * 24, METRICS_TOKEN_ENV: "t" * 24}
    assert lines(**strong) == [("PASS", "dashboard")]
