"""`check`: every exit code against moto and the scan-timeline layer, the dotenv artifact, flags and env."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import cli
from bot.adapters.ecr import EcrApi
from bot.core import dotenv
from bot.core.models import Reason, load_verdict
from tests import configs
from tests.fakes.ecr import DEFAULT_ACCOUNT, EcrDouble, basic_finding
from tests.harness import point_boto3_at
from tests.test_doctor import clean_region, restricted_credentials

REPO = "app"
# moto's state is one per process and shared with the session's double: a region of our own keeps ours apart.
REGION = "eu-west-3"
ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """time.monotonic and time.sleep for the check loop: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def double() -> Iterator[EcrDouble]:
    with EcrDouble(region=REGION) as started:
        yield started


@pytest.fixture
def ecr(double: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> EcrDouble:
    """A clean double, with boto3's default session pointed at it."""
    double.reset()
    clean_region(double)
    point_boto3_at(double.env(), monkeypatch)
    for key in ("ECR_GATE_CONFIG", "ECR_REPO", "IMAGE_TAG", "FAIL_ON_SEVERITY", "ECR_REGISTRY", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    double.create_repository(REPO, scan_on_push=True, mutability="IMMUTABLE")
    return double


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def check(clock: FakeClock, *args: str, env: dict[str, str] | None = None) -> int:
    return cli.main(["check", *args], env={**os.environ, **(env or {})}, clock=clock, sleep=clock.sleep)


def test_passes_after_in_progress_and_pins_the_digest(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    digest = ecr.push_image(REPO, "v1")
    ecr.script(
        REPO,
        tag="v1",
        steps=[
            {"status": "IN_PROGRESS", "repeat": 2},
            {"status": "COMPLETE", "findings": [basic_finding("CVE-2024-0001", "MEDIUM", "zlib", "1.2.11")]},
        ],
    )

    assert check(clock, "--repository", REPO, "--tag", "v1") == 0

    out, err = capsys.readouterr()
    assert "attempt 1: IN_PROGRESS (elapsed 0s)" in out
    assert "attempt 2: IN_PROGRESS (elapsed 15s)" in out
    assert "attempt 3: COMPLETE (elapsed 30s)" in out
    assert f"PASSED: {REPO}:v1 ({digest})" in out
    assert "MEDIUM=1" in out
    assert err == ""  # nothing on stderr for a pass at the default interval
    assert clock.sleeps == [15.0, 15.0]
    asked = [c.image for c in ecr.calls("DescribeImageScanFindings", REPO)]
    assert asked == ["v1", digest, digest]  # by digest once ECR named it


def test_blocked_by_moto_canned_finding_writes_dotenv(ecr: EcrDouble, clock: FakeClock, tmp_path, capsys) -> None:
    digest = ecr.push_image(REPO, "v2")
    ecr.start_scan(REPO, tag="v2")  # moto: COMPLETE with one HIGH finding (CVE-9999-9999)
    env_file = tmp_path / "scan.env"

    assert check(clock, "--repository", REPO, "--tag", "v2", "--dotenv", str(env_file)) == 1

    out, err = capsys.readouterr()
    assert "BLOCKED" in out and "CVE-9999-9999" in out
    assert "blocked (exit 1): 1 blocking finding (worst HIGH)" in err
    assert "what to do: Fix or upgrade the listed packages" in err
    assert env_file.read_text() == (
        "VULN_CRITICAL=0\nVULN_HIGH=1\nVULN_MEDIUM=0\nVULN_LOW=0\nVULN_TOTAL=1\n"
        "VULN_ACCEPTED=0\nEXCEPTIONS_EXPIRED=0\nEXCEPTIONS_UNUSED=0\n"
        f"SCAN_REASON=blocked\nIMAGE_DIGEST={digest}\n"
    )


def test_fail_on_from_env_with_spaces_and_flag_with_commas(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "v3")
    ecr.start_scan(REPO, tag="v3")  # one HIGH finding

    assert check(clock, "--tag", "v3", env={"ECR_REPO": REPO, "FAIL_ON_SEVERITY": "CRITICAL  HIGH"}) == 1
    assert check(clock, "--tag", "v3", "--fail-on", "CRITICAL", env={"ECR_REPO": REPO}) == 0
    assert check(clock, env={"ECR_REPO": REPO, "IMAGE_TAG": "v3", "FAIL_ON_SEVERITY": "critical,high,medium"}) == 1
    assert "blocking on CRITICAL/HIGH/MEDIUM" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("FAILED", Reason.SCAN_FAILED),
        ("UNSUPPORTED_IMAGE", Reason.UNSUPPORTED_IMAGE),
        ("FINDINGS_UNAVAILABLE", Reason.FINDINGS_UNAVAILABLE),
        ("SCAN_ELIGIBILITY_EXPIRED", Reason.FINDINGS_UNAVAILABLE),
        ("LIMIT_EXCEEDED", Reason.FINDINGS_UNAVAILABLE),
    ],
)
def test_scan_ends_badly_exit_2(ecr: EcrDouble, clock: FakeClock, capsys, status: str, reason: Reason) -> None:
    ecr.push_image(REPO, "v4")
    ecr.script(REPO, tag="v4", steps=[{"status": "IN_PROGRESS"}, {"status": status, "description": "boom\x1b[31m"}])

    assert check(clock, "--repository", REPO, "--tag", "v4") == 2

    err = capsys.readouterr().err
    assert f"{reason.value} (exit 2)" in err
    assert "what to do:" in err
    assert "\x1b" not in err  # ECR's text is cleaned of control characters before it reaches a terminal


def test_failed_scan_dotenv_has_reason_and_no_counts(ecr: EcrDouble, clock: FakeClock, tmp_path) -> None:
    digest = ecr.push_image(REPO, "v5")
    ecr.script(REPO, tag="v5", steps=[{"status": "FAILED", "description": "The scan failed."}])
    env_file = tmp_path / "scan.env"

    assert check(clock, "--repository", REPO, "--tag", "v5", "--dotenv", str(env_file)) == 2

    text = env_file.read_text()
    # Empty, never 0: "no scan" must not read as "no findings" in a later job.
    assert text == (
        "VULN_CRITICAL=\nVULN_HIGH=\nVULN_MEDIUM=\nVULN_LOW=\nVULN_TOTAL=\n"
        "VULN_ACCEPTED=\nEXCEPTIONS_EXPIRED=\nEXCEPTIONS_UNUSED=\n"
        f"SCAN_REASON=scan_failed\nIMAGE_DIGEST={digest}\n"
    )
    # GitLab's parser: every line KEY=VALUE (no blank or comment lines), file under 5 KB.
    assert all(re.fullmatch(r"[A-Z_]+=[^\n]*", line) for line in text.splitlines())
    assert len(text.encode()) < dotenv.DOTENV_LIMIT_BYTES


def test_scan_not_found_after_grace(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.create_repository("noscan", scan_on_push=False)
    ecr.push_image("noscan", "v1")  # moto starts no scan: ScanNotFoundException

    assert check(clock, "--repository", "noscan", "--tag", "v1") == 3

    out, err = capsys.readouterr()
    # Asked again inside the 60 s grace (ECR can lag right after a push), then believed.
    assert out.count("ScanNotFoundException") == 5
    assert "attempt 5: ScanNotFoundException (elapsed 60s)\n" in out
    assert "scan_not_found (exit 3)" in err
    assert "put-image-scanning-configuration --repository-name noscan" in err
    assert "no scan found: scan on push is off for noscan" in err  # checked: scanOnPush=false, no rule


def test_scan_not_found_with_scan_on_push_on_says_the_image_predates_it(ecr: EcrDouble, clock: FakeClock, capsys):
    ecr.create_repository("latescan", scan_on_push=True)  # on now; this image's push started no scan
    ecr.push_image("latescan", "v1")
    assert check(clock, "--repository", "latescan", "--tag", "v1") == 3
    err = capsys.readouterr().err
    assert "scan on push is off" not in err
    assert "no scan found for latescan:v1, though scans run on push now (BASIC scanning on push" in err
    assert f"aws ecr start-image-scan --repository-name latescan --region {ecr.region} --image-id imageTag=v1" in err


def test_not_found_grace_zero_answers_at_once(ecr: EcrDouble, clock: FakeClock) -> None:
    assert check(clock, "--repository", REPO, "--tag", "never-pushed", "--not-found-grace", "0") == 3
    assert clock.sleeps == []


def test_image_and_repository_not_found(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    assert check(clock, "--repository", REPO, "--tag", "never-pushed") == 3
    assert "image_not_found (exit 3)" in capsys.readouterr().err
    assert check(clock, "--repository", "nope", "--tag", "v1") == 3
    assert "repository_not_found (exit 3)" in capsys.readouterr().err


def test_access_denied_as_real_ecr_sends_it(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "v6")
    ecr.script(REPO, tag="v6", steps=[{"error": "AccessDeniedException"}])

    assert check(clock, "--repository", REPO, "--tag", "v6") == 3

    err = capsys.readouterr().err
    assert "access_denied (exit 3)" in err
    assert "ecr:DescribeImageScanFindings" in err


def test_access_denied_by_moto_iam(ecr: EcrDouble, clock: FakeClock, monkeypatch, capsys) -> None:
    ecr.push_image(REPO, "v7")
    with restricted_credentials(ecr, monkeypatch, ["ecr:DescribeImages"]):
        assert check(clock, "--repository", REPO, "--tag", "v7") == 3
    err = capsys.readouterr().err
    assert "access_denied (exit 3)" in err
    assert "ecr:DescribeImageScanFindings" in err


def test_timeout_exit_4(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "slow")
    ecr.script(REPO, tag="slow", steps=[{"status": "IN_PROGRESS"}])

    assert check(clock, "--repository", REPO, "--tag", "slow", "--timeout", "60") == 4

    out, err = capsys.readouterr()
    attempts = [line for line in out.splitlines() if line.startswith("attempt")]
    assert attempts[-1] == "attempt 5: IN_PROGRESS (elapsed 60s)"
    assert clock.sleeps == [15.0] * 4
    assert "timeout (exit 4): scan of app not complete after 60s (last status IN_PROGRESS)" in err
    assert "raise --timeout" in err


def test_throttling_is_retried_with_backoff(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "thr")
    ecr.script(
        REPO,
        tag="thr",
        steps=[
            {"error": "ThrottlingException", "repeat": 3},
            {"error": "ServerException"},
            {"status": "COMPLETE", "findings": []},
        ],
    )

    assert check(clock, "--repository", REPO, "--tag", "thr") == 0

    out = capsys.readouterr().out
    assert out.count("ThrottlingException: Rate exceeded; retrying in") == 3
    assert "ServerException" in out
    assert len(clock.sleeps) == 4
    assert all(0.5 <= s <= 60 for s in clock.sleeps)  # jittered backoff, not the poll interval


def test_throttled_for_the_whole_window_is_an_error_naming_throttling(
    ecr: EcrDouble, clock: FakeClock, tmp_path, capsys
) -> None:
    ecr.push_image(REPO, "thr2")
    ecr.script(REPO, tag="thr2", steps=[{"error": "ThrottlingException"}])
    env_file = tmp_path / "scan.env"

    assert check(clock, "--repository", REPO, "--tag", "thr2", "--timeout", "30", "--dotenv", str(env_file)) == 5

    out, err = capsys.readouterr()
    assert "detail: ECR gave no answer in 30s; last error: ECR ThrottlingException: Rate exceeded" in err
    assert "raise --timeout" not in err and "timeout_s" not in err  # a longer wait is not the fix
    assert clock.now - 1000.0 == pytest.approx(30.0)  # never waited past the deadline
    assert "SCAN_REASON=error\n" in env_file.read_text()
    # The summary's attempt count is the number of attempt lines printed, the last one included.
    attempts = [line for line in out.splitlines() if line.startswith("attempt ")]
    summary = re.search(r"after (\d+) attempts", out)
    assert summary is not None and int(summary.group(1)) == len(attempts)
    assert attempts[-1].endswith("the time is up")


def test_complete_without_findings_object_is_an_error(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "empty")
    ecr.script(REPO, tag="empty", steps=[{"status": "COMPLETE", "no_findings_object": True}])

    assert check(clock, "--repository", REPO, "--tag", "empty") == 5
    err = capsys.readouterr().err
    assert "error (exit 5)" in err
    assert "detail: a COMPLETE answer without an imageScanFindings object (never read as clean)" in err
    assert "ECR said" not in err and "worker logs" not in err


def test_unexpected_exception_one_line_no_secret(
    ecr: EcrDouble, clock: FakeClock, monkeypatch, tmp_path, capsys
) -> None:
    def boom(self, image, page_size=1000):
        raise RuntimeError("kaput glpat-abcdefghijklmnopqrst and s3cr3t-token-value\nsecond line")

    monkeypatch.setattr(EcrApi, "scan_findings", boom)
    env_file = tmp_path / "scan.env"
    code = check(
        clock,
        "--repository",
        REPO,
        "--tag",
        "v1",
        "--dotenv",
        str(env_file),
        env={"GITLAB_TOKEN": "s3cr3t-token-value"},
    )

    assert code == 5
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "s3cr3t-token-value" not in err and "glpat-abcdefghij" not in err
    assert err.count("\n") == 1 and "RuntimeError: kaput" in err
    assert "SCAN_REASON=error\n" in env_file.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--repository (or ECR_REPO) is required"),
        (["--repository", REPO], "--tag (or IMAGE_TAG) or --digest is required"),
        (["--repository", "Bad Repo", "--tag", "v1"], "--repository: not a valid ECR repository name"),
        (["--repository", REPO, "--tag", "v1", "--fail-on", "SEVERE"], "unknown severities"),
        (["--repository", REPO, "--tag", "v1", "--fail-on", ","], "at least one severity"),
        (["--repository", REPO, "--tag", "v1", "--interval", "0"], "--interval must be a number > 0"),
        (["--repository", REPO, "--tag", "v1", "--timeout", "nan"], "--timeout must be a number > 0"),
        (["--repository", REPO, "--tag", "v1", "--registry-id", "12"], "--registry-id: must be a 12-digit"),
        (["--repository", REPO, "--digest", "sha256:xyz"], "--digest must look like"),
        (["--repository", REPO, "--tag", "v1", "--interval", "soon"], "invalid float value"),
        (["--repository", REPO, "--tag", "v1", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_3(ecr: EcrDouble, clock: FakeClock, capsys, args: list[str], message: str) -> None:
    assert check(clock, *args) == 3
    assert message in capsys.readouterr().err
    assert ecr.calls() == []


def test_config_errors_exit_3_and_still_write_dotenv(ecr: EcrDouble, clock: FakeClock, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gitlab\nurl=")
    env_file = tmp_path / "scan.env"

    assert check(clock, "--config", str(bad), "--repository", REPO, "--tag", "v1", "--dotenv", str(env_file)) == 3

    assert "not valid TOML" in capsys.readouterr().err
    assert "SCAN_REASON=config_error\n" in env_file.read_text()
    assert check(clock, "--repository", REPO, "--tag", "v1", env={"ECR_GATE_CONFIG": str(tmp_path / "none.toml")}) == 3


def test_config_file_supplies_policy_and_flags_override(ecr: EcrDouble, clock: FakeClock, tmp_path, capsys) -> None:
    ecr.push_image(REPO, "v8")
    ecr.start_scan(REPO, tag="v8")  # one HIGH finding
    config = tmp_path / "config.toml"
    # No GitLab secrets in the environment: `check` does not need them.
    configs.write_config(
        config,
        defaults=False,
        gitlab={"url": "https://gitlab.example.com"},
        scan={"poll_interval_s": 20},
        projects=[{"path": "g/p", "images": [{"repository": "app", "push_job": "push", "fail_on": ["CRITICAL"]}]}],
    )

    assert check(clock, "--config", str(config), "--tag", "v8", env={"ECR_REPO": REPO}) == 0
    assert "blocking on CRITICAL; every 20s" in capsys.readouterr().out
    assert (
        check(
            clock,
            "--tag",
            "v8",
            "--fail-on",
            "HIGH",
            "--interval",
            "30",
            env={"ECR_REPO": REPO, "ECR_GATE_CONFIG": str(config)},
        )
        == 1
    )
    assert "blocking on HIGH; every 30s" in capsys.readouterr().out


def test_registry_and_region_from_ecr_registry_variable(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "v9")
    ecr.start_scan(REPO, tag="v9")
    env = {"ECR_REGISTRY": f"{DEFAULT_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com", "ECR_REPO": REPO, "IMAGE_TAG": "v9"}

    assert check(clock, env=env) == 1

    assert f"(registry {DEFAULT_ACCOUNT})" in capsys.readouterr().out
    assert {c.registry_id for c in ecr.calls("DescribeImageScanFindings")} == {DEFAULT_ACCOUNT}


def test_short_interval_warns(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    ecr.push_image(REPO, "v10")
    ecr.script(REPO, tag="v10", steps=[{"status": "COMPLETE", "findings": []}])
    assert check(clock, "--repository", REPO, "--tag", "v10", "--interval", "5") == 0
    assert "warning: --interval 5s is below 10s" in capsys.readouterr().err


def test_json_is_one_object_on_stdout(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    digest = ecr.push_image(REPO, "v11")
    ecr.script(
        REPO,
        tag="v11",
        steps=[
            {"status": "IN_PROGRESS"},
            {
                "status": "COMPLETE",
                "findings": [
                    basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1"),
                    basic_finding("CVE-2024-0002", "LOW", "bash", "5.1"),
                ],
            },
        ],
    )

    assert check(clock, "--repository", REPO, "--tag", "v11", "--json") == 1

    out, err = capsys.readouterr()
    data = json.loads(out)  # stdout is exactly one JSON document; progress went to stderr
    assert "attempt 2: COMPLETE" in err
    assert data["reason"] == "blocked" and data["exit_code"] == 1
    assert data["digest"] == digest
    assert data["counts"] == {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 0, "LOW": 1, "INFORMATIONAL": 0}
    assert data["blocking_total"] == 1
    assert [f["id"] for f in data["blocking"]] == ["CVE-2023-44487"]
    assert data["blocking"][0]["fixed_version"] == "1.43.0-1+deb11u1"
    assert load_verdict(data).reason is Reason.BLOCKED


def test_python_dash_m_bot_runs_the_gate(ecr: EcrDouble, tmp_path) -> None:
    """The real entry point in a subprocess: exit code, dotenv and no traceback."""
    ecr.push_image(REPO, "sub")
    ecr.script(REPO, tag="sub", steps=[{"status": "COMPLETE", "findings": []}])
    env = {**os.environ, **ecr.env(), "PYTHONPATH": str(ROOT)}
    env_file = tmp_path / "scan.env"
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check", "--repository", REPO, "--tag", "sub", "--dotenv", str(env_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PASSED: app:sub" in proc.stdout
    assert "VULN_TOTAL=0\nVULN_ACCEPTED=0\nEXCEPTIONS_EXPIRED=0\nEXCEPTIONS_UNUSED=0\nSCAN_REASON=passed\n" in (
        env_file.read_text()
    )
    proc = subprocess.run([sys.executable, "-m", "bot"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "usage: ecr-scan-gate" in proc.stderr


def test_console_script_entry_point_is_main() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["ecr-scan-gate"].partition(":")
    assert (module, name) == ("bot.cli", "main") and callable(cli.main)


def test_json_config_error_is_still_one_object(ecr: EcrDouble, clock: FakeClock, capsys) -> None:
    assert check(clock, "--repository", REPO, "--json") == 3
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "reason": "config_error",
        "exit_code": 3,
        "problems": ["--tag (or IMAGE_TAG) or --digest is required"],
    }


def test_a_policy_file_accepts_a_finding_and_the_outputs_say_so(
    ecr: EcrDouble, clock: FakeClock, tmp_path, capsys
) -> None:
    ecr.push_image(REPO, "v9")
    ecr.start_scan(REPO, tag="v9")  # moto: COMPLETE with one HIGH finding (CVE-9999-9999)
    until = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    policy = tmp_path / "ecr-scan-gate.toml"
    policy.write_text(
        f'[[policy.exceptions]]\nid = "CVE-9999-9999"\nreason = "canned by moto"\nexpires = {until}\nby = "@sec"\n'
        f'[[policy.exceptions]]\nid = "CVE-2000-0001"\nreason = "old"\nexpires = {until}\n'
    )
    env_file = tmp_path / "scan.env"
    args = ("--repository", REPO, "--tag", "v9", "--policy", str(policy), "--dotenv", str(env_file))
    assert check(clock, *args) == 0
    out = capsys.readouterr().out
    assert "accepted: CVE-9999-9999" in out and f"until {until} by @sec" in out and "canned by moto" in out
    assert f"unused exception: CVE-2000-0001 until {until}" in out
    assert "VULN_TOTAL=0\nVULN_ACCEPTED=1\nEXCEPTIONS_EXPIRED=0\nEXCEPTIONS_UNUSED=1\n" in env_file.read_text()
    assert check(clock, *args[:-2], "--json") == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [w["acceptance"]["id"] for w in data["waived"]] == ["CVE-9999-9999"]
    assert [a["id"] for a in data["unused"]] == ["CVE-2000-0001"]


def test_a_broken_policy_file_is_a_config_error_naming_the_key(ecr: EcrDouble, clock: FakeClock, tmp_path, capsys):
    policy = tmp_path / "p.toml"
    policy.write_text('[[policy.exceptions]]\nid = "CVE-1"\nexpires = 2027-13-01\n')
    assert check(clock, "--repository", REPO, "--tag", "v1", "--policy", str(policy)) == 3
    err = capsys.readouterr().err
    assert "not valid TOML" in err
    policy.write_text('[[policy.exceptions]]\nid = "CVE-1"\nexpires = 2027-01-01\n')
    assert check(clock, "--repository", REPO, "--tag", "v1", "--policy", str(policy)) == 3
    assert "policy.exceptions[0].reason: Field required" in capsys.readouterr().err


def test_an_expired_exception_blocks_on_the_wall_clock_day(ecr: EcrDouble, clock: FakeClock, tmp_path, capsys):
    ecr.push_image(REPO, "v10")
    ecr.start_scan(REPO, tag="v10")  # one HIGH finding; the check's own clock is a fake monotonic one
    ended = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    policy = tmp_path / "p.toml"
    policy.write_text(f'[[policy.exceptions]]\nid = "CVE-9999-9999"\nreason = "was fine"\nexpires = {ended}\n')
    assert check(clock, "--repository", REPO, "--tag", "v10", "--policy", str(policy)) == 1
    assert f"exception expired: CVE-9999-9999 (exception expired on {ended}): blocking again" in capsys.readouterr().out
