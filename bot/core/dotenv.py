"""Pure: the gate's dotenv artifact text: VULN_* counts, SCAN_REASON and IMAGE_DIGEST for later jobs."""

from __future__ import annotations

from bot.core.models import DIGEST_RE, Reason, Severity, Verdict

# GitLab refuses a dotenv artifact of 5 KB or more (Ci::ParseDotenvArtifactService: size < limit).
DOTENV_LIMIT_BYTES = 5 * 1024
KEYS = (
    "VULN_CRITICAL",
    "VULN_HIGH",
    "VULN_MEDIUM",
    "VULN_LOW",
    "VULN_TOTAL",
    "VULN_ACCEPTED",  # fail_on findings an active exception covers
    "EXCEPTIONS_EXPIRED",  # findings blocking again because their exception ended
    "EXCEPTIONS_UNUSED",  # exceptions in scope that matched nothing
    "SCAN_REASON",
    "IMAGE_DIGEST",
)
# Not a Reason: the gate never reached ECR because its arguments or config were wrong.
CONFIG_ERROR_REASON = "config_error"
_COMPLETE = frozenset({Reason.PASSED, Reason.BLOCKED})


def render(verdict: Verdict | None, reason: str = "") -> str:
    """One KEY=VALUE per line, nothing else: GitLab's parser rejects blank and comment lines.

    Counts are written only for a finished scan. For any other outcome they are empty, never 0, so a
    later job cannot mistake "no scan" for "no findings" (a silent pass).
    """
    values = dict.fromkeys(KEYS, "")
    if verdict is not None:
        values["SCAN_REASON"] = verdict.reason.value
        # The digest is ECR's text: only a well-formed digest is written, so no value can smuggle a line.
        values["IMAGE_DIGEST"] = verdict.digest if DIGEST_RE.fullmatch(verdict.digest) else ""
        if verdict.reason in _COMPLETE:
            for severity in (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW):
                values[f"VULN_{severity.value}"] = str(int(verdict.counts.get(severity, 0)))
            values["VULN_TOTAL"] = str(int(verdict.blocking_total))
            values["VULN_ACCEPTED"] = str(sum(1 for w in verdict.waived if w.acceptance is not None))
            values["EXCEPTIONS_EXPIRED"] = str(len(verdict.expired))
            values["EXCEPTIONS_UNUSED"] = str(len(verdict.unused))
    if reason:
        values["SCAN_REASON"] = reason
    text = "".join(f"{key}={value}\n" for key, value in values.items())
    if len(text.encode()) >= DOTENV_LIMIT_BYTES:  # cannot happen with these values; a guard, not a branch
        raise ValueError("dotenv artifact would exceed GitLab's 5 KB limit")
    return text
