"""The documented IAM policy is enough and nothing in it is spare; per-account roles are assumed via STS.

moto evaluates IAM policies when INITIAL_NO_AUTH_ACTION_COUNT is set (moto docs: IAM-like access control).
That value is a global of the moto process, so these tests run their own moto server in a subprocess:
turning evaluation on in-process would also lock out the session's ECR double. Set-up runs with
evaluation off, each check with it on.

What the bot needs, and why:
- ecr:DescribeImageScanFindings: the only AWS call of the gate workers and of `check` (poll the scan).
- ecr:DescribeImages, ecr:DescribeRepositories, ecr:GetRegistryScanningConfiguration: `doctor` only (does the
  image exist, is scan on push on, is there a registry scanning rule); ecr:StartImageScan only for
  `doctor --start-scan`. An identity that runs only the gate may leave these out.
- sts:AssumeRole on the per-account roles, when images name a `role_arn`.
docs/iam-policy.json holds one policy per identity (docs/iam.md): `bot` (workers and doctor) and `ci_gate`
(the `check` job). moto checks ECR actions against resource "*" (its ECR responses name no resource), so
each policy is tested for its actions here; its resource ARNs are checked for shape only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bot.adapters.ecr import EcrApi, EcrCallError
from bot.core.errors import TransientError
from bot.core.models import Image, Phase, Reason
from bot.core.policy import Policy, decide
from bot.core.settings import EcrSettings
from tests.harness import ROOT

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
POLICY_PATH = ROOT / "docs" / "iam-policy.json"
REPOSITORY = "lp-app"
TAG = "v1"

Probe = Callable[[EcrApi, Image], Any]


def _scan(api: EcrApi, image: Image) -> Any:
    return api.scan_findings(image)


# Action -> the EcrApi call that needs it. An action in the policy but not here is one nothing uses.
PROBES: dict[str, Probe] = {
    "ecr:DescribeImageScanFindings": _scan,
    "ecr:DescribeImages": lambda api, image: api.describe_image(image),
    "ecr:DescribeRepositories": lambda api, image: api.describe_repository(image),
    "ecr:GetRegistryScanningConfiguration": lambda api, image: api.registry_scanning(image),
    "ecr:StartImageScan": lambda api, image: api.start_scan(image),
}
GATE_ACTION = "ecr:DescribeImageScanFindings"


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy["Statement"]
    return [found] if isinstance(found, dict) else list(found)


def allowed_actions(policy: dict[str, Any]) -> list[str]:
    actions: list[str] = []
    for statement in statements(policy):
        if statement.get("Effect") == "Allow":
            actions += [a for a in _as_list(statement.get("Action")) if a not in actions]
    return actions


def load_policies() -> dict[str, dict[str, Any]]:
    """name -> policy document; a file holding a single policy is named "policy"."""
    document = json.loads(POLICY_PATH.read_text())
    return {"policy": document} if "Statement" in document else document


POLICIES = load_policies()
ECR_ACTIONS = {name: [a for a in allowed_actions(p) if a.startswith("ecr:")] for name, p in POLICIES.items()}
REMOVALS = [(name, action) for name, actions in ECR_ACTIONS.items() for action in actions]
# The per-account role holds the bot's policy (docs/iam.md, cross-account registries).
ROLE_ACTIONS = ECR_ACTIONS.get("bot") or next(iter(ECR_ACTIONS.values()))


def ecr_policy(actions: list[str]) -> str:
    # Resource "*": moto matches ECR calls against "*" only (see the module docstring).
    statement = [{"Effect": "Allow", "Action": actions, "Resource": "*"}] if actions else []
    return json.dumps({"Version": "2012-10-17", "Statement": statement})


def assume_policy(role_arns: list[str]) -> str:
    statement = [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arns}] if role_arns else []
    return json.dumps({"Version": "2012-10-17", "Statement": statement})


# --- a moto server of our own, with IAM evaluation switchable -------------------------------------------------


class IamMoto:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "inf"  # set-up first; enforce() turns evaluation on
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        admin = {
            "endpoint_url": self.url,
            "region_name": REGION,
            "aws_access_key_id": "AKIAADMINSETUP000000",
            "aws_secret_access_key": "setup",
        }
        self.iam = boto3.client("iam", **admin)
        self.ecr = boto3.client("ecr", **admin)

    def _auth(self, count: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    @contextmanager
    def enforce(self) -> Iterator[None]:
        self._auth("0")
        try:
            yield
        finally:
            self._auth("inf")

    def user(self, ecr_actions: list[str], role_arns: list[str] | None = None) -> dict[str, str]:
        """A fresh IAM user with exactly these permissions; returns its access key."""
        name = f"bot-{uuid.uuid4().hex[:8]}"
        self.iam.create_user(UserName=name)
        if ecr_actions:
            self.iam.put_user_policy(UserName=name, PolicyName="ecr", PolicyDocument=ecr_policy(ecr_actions))
        if role_arns:
            self.iam.put_user_policy(UserName=name, PolicyName="assume", PolicyDocument=assume_policy(role_arns))
        key = self.iam.create_access_key(UserName=name)["AccessKey"]
        arn = f"arn:aws:iam::{ACCOUNT}:user/{name}"
        return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"], "arn": arn}

    def role(self, ecr_actions: list[str], trusted: str) -> str:
        """A role trusting one principal, holding exactly these ECR actions; returns its ARN."""
        name = f"ecr-scan-gate-{uuid.uuid4().hex[:8]}"
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": trusted}, "Action": "sts:AssumeRole"}],
        }
        arn = self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        if ecr_actions:
            self.iam.put_role_policy(RoleName=name, PolicyName="ecr", PolicyDocument=ecr_policy(ecr_actions))
        return arn

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def moto() -> Iterator[IamMoto]:
    server = IamMoto()
    try:
        server.ecr.create_repository(repositoryName=REPOSITORY)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 2,
                "digest": "sha256:" + "c" * 64,
            },
            "layers": [],
        }
        server.ecr.put_image(repositoryName=REPOSITORY, imageTag=TAG, imageManifest=json.dumps(manifest))
        server.ecr.start_image_scan(repositoryName=REPOSITORY, imageId={"imageTag": TAG})
        yield server
    finally:
        server.stop()


@pytest.fixture
def as_identity(moto: IamMoto, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], EcrApi]:
    """Point boto3's default chain (what the bot uses) at moto as this user."""

    def use(key: dict[str, str]) -> EcrApi:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["secret"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the first credentials it found
        return EcrApi(EcrSettings())

    return use


def run(probe: Probe, api: EcrApi, image: Image) -> tuple[Reason | None, str]:
    """(reason, detail) of a call: None when it got a real answer."""
    try:
        result = probe(api, image)
    except EcrCallError as exc:
        return exc.reason, exc.result.detail
    if probe is _scan:
        return result.reason, result.detail
    return None, ""


def image(role_arn: str | None = None) -> Image:
    return Image(REPOSITORY, tag=TAG, region=REGION, role_arn=role_arn or "")


# --- (a) the documented policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_policy_grants_only_named_actions_the_bot_uses(name: str) -> None:
    actions = allowed_actions(POLICIES[name])
    assert GATE_ACTION in actions, name
    for statement in statements(POLICIES[name]):
        assert statement.get("Effect") == "Allow", f"{name}: only Allow statements expected"
        assert "NotAction" not in statement and "NotResource" not in statement
    for action in actions:
        assert "*" not in action, f"{name}: wildcard action {action}"
        assert action in PROBES or action == "sts:AssumeRole", f"{name}: {action} is used by nothing"


@pytest.mark.parametrize("name", POLICIES)
def test_policy_scopes_repository_actions_to_repositories(name: str) -> None:
    for statement in statements(POLICIES[name]):
        if set(_as_list(statement["Action"])) & {
            "ecr:DescribeImageScanFindings",
            "ecr:DescribeImages",
            "ecr:DescribeRepositories",
            "ecr:StartImageScan",
        }:
            for resource in _as_list(statement["Resource"]):
                assert resource.startswith("arn:aws:ecr:") and ":repository/" in resource, resource


@pytest.mark.parametrize("name", POLICIES)
def test_the_policy_suffices_for_every_call(moto: IamMoto, as_identity: Callable[..., EcrApi], name: str) -> None:
    api = as_identity(moto.user(ECR_ACTIONS[name]))
    with moto.enforce():
        results = {action: run(PROBES[action], api, image()) for action in ECR_ACTIONS[name]}
        scan = api.scan_findings(image())
    assert {a: r for a, r in results.items() if r[0] is Reason.ACCESS_DENIED} == {}
    assert scan.phase is Phase.COMPLETE and scan.findings  # moto's canned HIGH finding: a real answer


def test_without_any_permission_the_gate_is_denied_never_passed(
    moto: IamMoto, as_identity: Callable[..., EcrApi]
) -> None:
    api = as_identity(moto.user([]))
    with moto.enforce():
        result = api.scan_findings(image())
    assert result.reason is Reason.ACCESS_DENIED and GATE_ACTION in result.detail
    verdict = decide(result, Policy(), Image(REPOSITORY, TAG))
    assert verdict.reason is Reason.ACCESS_DENIED and not verdict.passed
    assert GATE_ACTION in verdict.remediation


@pytest.mark.parametrize(("name", "removed"), REMOVALS)
def test_removing_any_action_is_access_denied_naming_it(
    moto: IamMoto, as_identity: Callable[..., EcrApi], name: str, removed: str
) -> None:
    api = as_identity(moto.user([a for a in ECR_ACTIONS[name] if a != removed]))
    with moto.enforce():
        results = {action: run(PROBES[action], api, image()) for action in ECR_ACTIONS[name]}
    reason, detail = results.pop(removed)
    assert reason is Reason.ACCESS_DENIED, (removed, detail)
    assert removed in detail
    # Only the call that needs it breaks: the rest of the policy is independent of it.
    assert all(r is not Reason.ACCESS_DENIED for r, _ in results.values()), results


# --- (b) one role per account, assumed through STS ---------------------------------------------------------------


def test_assumed_role_credentials_are_the_ones_used(moto: IamMoto, as_identity: Callable[..., EcrApi]) -> None:
    # The bot's own identity may only assume; the role may read. Success proves the role's keys were used.
    key, role = _bot_and_role(moto, ROLE_ACTIONS)
    api = as_identity(key)
    with moto.enforce():
        direct = api.scan_findings(image())
        through_role = api.scan_findings(image(role))
        again = api.scan_findings(image(role))  # the cached session, still the role's
    assert direct.reason is Reason.ACCESS_DENIED
    assert through_role.phase is Phase.COMPLETE and through_role.findings
    assert again.phase is Phase.COMPLETE


def _bot_and_role(
    moto: IamMoto, role_actions: list[str], *, may_assume: bool = True, trusted: bool = True
) -> tuple[dict[str, str], str]:
    key = moto.user([])
    role = moto.role(role_actions, trusted=key["arn"] if trusted else f"arn:aws:iam::{ACCOUNT}:user/someone-else")
    if may_assume:
        moto.iam.put_user_policy(
            UserName=key["arn"].rsplit("/", 1)[1], PolicyName="assume", PolicyDocument=assume_policy([role])
        )
    return key, role


def test_a_role_without_the_scan_action_is_access_denied_naming_it(
    moto: IamMoto, as_identity: Callable[..., EcrApi]
) -> None:
    key, role = _bot_and_role(moto, [a for a in ROLE_ACTIONS if a != GATE_ACTION] or ["ecr:DescribeImages"])
    api = as_identity(key)
    with moto.enforce():
        result = api.scan_findings(image(role))
    assert result.reason is Reason.ACCESS_DENIED and GATE_ACTION in result.detail


@pytest.mark.parametrize("why", ["identity may not assume", "role does not trust the identity"])
def test_a_refused_assume_role_is_access_denied_naming_sts_assume_role(
    moto: IamMoto, as_identity: Callable[..., EcrApi], why: str
) -> None:
    key, role = _bot_and_role(
        moto,
        [GATE_ACTION],
        may_assume=why != "identity may not assume",
        trusted=why != "role does not trust the identity",
    )
    api = as_identity(key)
    with moto.enforce():
        result = api.scan_findings(image(role))
        with pytest.raises(EcrCallError) as doctor_call:
            api.describe_image(image(role))
    assert result.phase is Phase.FINAL and result.reason is Reason.ACCESS_DENIED
    assert "sts:AssumeRole" in result.detail and role in result.detail
    assert doctor_call.value.reason is Reason.ACCESS_DENIED and "sts:AssumeRole" in doctor_call.value.result.detail
    verdict = decide(result, Policy(), Image(REPOSITORY, TAG))
    assert verdict.reason is Reason.ACCESS_DENIED and not verdict.passed


def test_documented_policies_are_the_two_identities_of_docs_iam_md() -> None:
    assert set(POLICIES) == {"bot", "ci_gate"}
    assert ECR_ACTIONS["ci_gate"] == [GATE_ACTION]  # `check` reads the scan and nothing else
    assert all(p.get("Version") == "2012-10-17" for p in POLICIES.values())


@pytest.mark.parametrize(
    ("code", "http", "transient"),
    [
        ("Throttling", 400, True),
        ("InternalFailure", 500, True),
        ("ServiceUnavailable", 503, True),
        ("AccessDenied", 403, False),
        ("ExpiredToken", 400, False),
    ],
)
def test_sts_throttling_is_retried_later_and_only_a_refusal_is_a_verdict(
    monkeypatch: pytest.MonkeyPatch, code: str, http: int, transient: bool
) -> None:
    class RefusingSts:
        def assume_role(self, **_: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": http}}, "AssumeRole"
            )

    real = boto3.client
    monkeypatch.setattr(boto3, "client", lambda name, **kw: RefusingSts() if name == "sts" else real(name, **kw))
    ref = image(f"arn:aws:iam::{ACCOUNT}:role/sts-{code}-{uuid.uuid4().hex[:6]}")
    if transient:
        with pytest.raises(TransientError):
            EcrApi(EcrSettings()).scan_findings(ref)
    else:
        result = EcrApi(EcrSettings()).scan_findings(ref)
        assert result.reason is Reason.ACCESS_DENIED and "sts:AssumeRole" in result.detail
