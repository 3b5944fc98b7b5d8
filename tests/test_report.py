"""Tests for bot.core.report and bot.core.markdown: status payloads, the MR note, and that hostile text stays inert."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core import report
from bot.core.gate import Gate, GateState
from bot.core.markdown import md_code, md_fence, md_text, safe_link, safe_url, table_cell
from bot.core.models import Finding, Image, Reason, Severity, Verdict
from bot.core.report import (
    DESCRIPTION_LIMIT,
    MARKER,
    NOTE_LIMIT,
    StatusPayload,
    note_has_marker,
    render_note,
    status_for,
    status_polling,
    status_waiting,
)

# --- builders ---------------------------------------------------------------------------------


def finding(id: str = "CVE-2024-0001", severity: Severity = Severity.HIGH, **kw: str) -> Finding:
    kw = {"package": "openssl", "installed_version": "3.0.2", "fixed_version": "3.0.13", **kw}
    return Finding(id=id, severity=severity, **kw)


def verdict(reason: Reason = Reason.PASSED, **kw: object) -> Verdict:
    kw = {"summary": f"summary for {reason.value}", "digest": "sha256:" + "ab" * 32, **kw}
    if reason is not Reason.PASSED:
        kw.setdefault("remediation", f"do the thing for {reason.value}")
    return Verdict(reason=reason, **kw)  # type: ignore[arg-type]


def image(
    repo: str = "app/api",
    v: Verdict | None = None,
    state: GateState = GateState.DONE,
    *,
    tag: str = "0123abcd",
    status_name: str | None = None,
    registry: str = "",
) -> Gate:
    """A gate as the note renders it; `registry` is the registry id (shown in the registry host)."""
    return Gate(
        project_id=1,
        project_path="group/app",
        sha="0123abcdef456789",
        ref="main",
        pipeline_id=1,
        image=Image(repository=repo, tag=tag, registry_id=registry),
        push_job="docker-push",
        status_name=f"ecr-scan-gate/{repo}" if status_name is None else status_name,
        state=state,
        verdict=v,
    )


def note(*images: Gate, max_listed: int = 20) -> str:
    return render_note(images, project_path="group/app", sha="0123abcdef456789", max_listed=max_listed)


def blocked(n: int = 3, **kw: object) -> Verdict:
    items = tuple(finding(f"CVE-2024-{i:04d}") for i in range(1, n + 1))
    kw = {"counts": {Severity.HIGH: n}, "blocking": items, "blocking_total": n, **kw}
    return verdict(Reason.BLOCKED, **kw)


# --- the inertness checker ------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`).*?(?<!`)\1(?!`)")
_LINK = re.compile(r"\]\(([^)]*)\)")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
# Kept apart from bot.core.markdown's allowlist so that a bug there cannot blind the checker.
_LINK_TARGET = re.compile(
    r"https?://(nvd\.nist\.gov|cve\.mitre\.org|security-tracker\.debian\.org|github\.com/advisories|"
    r"access\.redhat\.com|people\.ubuntu\.com/~ubuntu-security)/[\w\-.~/?#=&%+,;:]*",
    re.ASCII,
)


def outside_code(body: str) -> str:
    """The body without fenced blocks and code spans: where GitLab expands mentions and references."""
    kept, fence = [], ""
    for line in body.split("\n"):
        m = _FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end() :].strip():
                fence = ""
            continue
        if m:
            fence = m.group(1)
            continue
        kept.append(line)
    return _CODE_SPAN.sub("", "\n".join(kept))


def assert_inert(body: str) -> None:
    assert body.startswith(MARKER) and body.count(MARKER) == 1
    assert len(body) <= NOTE_LIMIT
    for line in body.splitlines():
        assert not re.sub(r"^[\s>]*", "", line).startswith("/"), line
    assert all(ch == "\n" or unicodedata.category(ch) not in ("Cc", "Zl", "Zp") for ch in body)
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", body)
    # Tags anywhere (even inside code), except our own marker: nothing even looks like HTML.
    assert not re.search(r"<[A-Za-z!/?]", body.replace(MARKER, "", 1))
    text = outside_code(body)
    assert not re.search(r"@\w", text), "mention outside code"
    assert not re.search(r"[#!]\d", text), "issue/MR reference outside code"
    for target in _LINK.findall(text):
        assert _LINK_TARGET.fullmatch(target), target
    rest = _LINK.sub("", text).lower()
    assert "javascript:" not in rest and "://" not in rest
    table: list[str] = []
    for line in [*body.split("\n"), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            widths = {len(_UNESCAPED_PIPE.findall(row)) for row in table}
            assert len(widths) == 1, table
            table = []


# --- status payloads ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_status_for_each_reason(reason: Reason) -> None:
    payload = status_for(verdict(reason, summary="2 blocking findings in app/api"))
    assert payload == StatusPayload(reason.commit_state, "2 blocking findings in app/api")
    assert payload.state in {"success", "failed", "canceled", "skipped"}


def test_status_description_is_one_clean_line_within_limit() -> None:
    summary = "line one\r\nline\ttwo\x00\x1b[31m\u202e\u2028 " + "x" * 1000
    description = status_for(verdict(Reason.BLOCKED, summary=summary)).description
    assert len(description) == DESCRIPTION_LIMIT and description.endswith("…")
    assert description.startswith("line one line two[31m x")
    assert all(unicodedata.category(ch)[0] != "C" and ch not in "\u2028" for ch in description)


def test_status_description_falls_back_to_the_reason() -> None:
    assert status_for(verdict(Reason.SCAN_NOT_FOUND, summary="\x00 \n")).description == "scan not found"


def test_status_waiting_and_polling() -> None:
    assert status_waiting("app/api") == StatusPayload("pending", "Waiting for app/api to be pushed and scanned")
    assert status_polling("app/api", "IN_PROGRESS") == StatusPayload("running", "ECR scan IN_PROGRESS for app/api")
    assert status_polling("app/api", "").description == "ECR scan IN_PROGRESS for app/api"
    long = status_waiting("r\n" * 500)
    assert len(long.description) <= DESCRIPTION_LIMIT and "\n" not in long.description
    assert long.description.endswith("to be pushed and scanned")


# --- the note ---------------------------------------------------------------------------------------

_WORDS = {Reason.PASSED: "PASSED", Reason.BLOCKED: "BLOCKED", Reason.CANCELED: "CANCELED", Reason.SKIPPED: "SKIPPED"}
_NOT_FROM_ECR = (Reason.CANCELED, Reason.SKIPPED, Reason.PUSH_JOB_MISSING, Reason.ERROR, Reason.TIMEOUT)


@pytest.mark.parametrize("reason", list(Reason))
def test_section_for_each_reason(reason: Reason) -> None:
    v = blocked(2) if reason is Reason.BLOCKED else verdict(reason, detail="ECR says: no.")
    body = note(image("app/api", v))
    assert_inert(body)
    label = "gate config" if reason is Reason.CONFIG_ERROR else "app/api:0123abcd"
    assert f"#### {_WORDS.get(reason, 'FAILED')} · `{label}`" in body
    assert f"summary for {reason.value}".replace("_", "\\_") in body
    assert f"Reason `{reason.value}` · digest `sha256:{'ab' * 32}`" in body
    complete = reason in (Reason.PASSED, Reason.BLOCKED)
    assert ("| CRITICAL | HIGH | MEDIUM | LOW | INFORMATIONAL | UNDEFINED |" in body) == complete
    assert ("**What to do:** do the thing" in body) == (reason is not Reason.PASSED)
    from_ecr = not complete and reason not in (*_NOT_FROM_ECR, Reason.CONFIG_ERROR)
    assert ("ECR said:\n\n```text\nECR says: no.\n```" in body) == from_ecr
    assert ("Details:\n\n```text\nECR says: no.\n```" in body) == (reason in _NOT_FROM_ECR)
    assert ("**Problems:**\n\n- `ECR says`: no\\." in body) == (reason is Reason.CONFIG_ERROR)
    assert ("**Blocking findings** (2, most severe first):" in body) == (reason is Reason.BLOCKED)


def test_header_title_sha_and_footer() -> None:
    body = note(image("b", verdict()), image("a", blocked()))
    lines = body.split("\n")
    assert lines[0] == MARKER and lines[1] == "### ECR scan gate: 1 of 2 images failed"
    assert "Results for commit `0123abcd` in `group/app`." in body
    assert "maintained by ecr-scan-gate and updated in place" in lines[-2]
    assert note_has_marker(body) and body.endswith("\n")


@pytest.mark.parametrize(
    ("images", "title"),
    [
        ([image("a", verdict()), image("b", verdict())], "all 2 images passed"),
        ([image("a", verdict())], "the image passed"),
        ([image("a", verdict()), image("b", state=GateState.WAITING)], "waiting for 1 of 2 images"),
        ([image("a", blocked()), image("b", state=GateState.POLLING)], "1 of 2 images failed, 1 still pending"),
        ([image("a", verdict(Reason.CANCELED)), image("b", verdict())], "1 of 2 images canceled"),
        ([image("a", None)], "1 of 1 image failed"),  # DONE without a verdict fails closed
        ([], "no images to check"),
    ],
)
def test_title(images: list[Gate], title: str) -> None:
    assert note(*images).split("\n")[1] == f"### ECR scan gate: {title}"


def test_waiting_and_scanning_sections() -> None:
    body = note(image("a", state=GateState.WAITING), image("b", verdict(), state=GateState.POLLING))
    assert "#### WAITING · `a:0123abcd`\n\nWaiting for the image to be pushed" in body
    assert "#### SCANNING · `b:0123abcd`\n\nECR is scanning the image" in body
    assert "summary for passed" not in body  # a verdict on an unfinished gate is not shown
    assert "Commit status `ecr-scan-gate/a`" in body


def test_sections_sorted_by_repository() -> None:
    body = note(image("zeta", verdict()), image("alpha", blocked()), image("mid", state=GateState.WAITING))
    assert body.index("`alpha:") < body.index("`mid:") < body.index("`zeta:")


def test_findings_most_severe_first_and_capped() -> None:
    severities = [Severity.HIGH] * 15 + [Severity.CRITICAL] * 10
    items = [finding(f"CVE-2024-{i:04d}", sev) for i, sev in enumerate(severities)]
    body = note(image("a", blocked(blocking=tuple(items), blocking_total=30)))
    rows = [line for line in body.split("\n") if line.startswith("| [`CVE")]
    assert len(rows) == 20
    ids = [re.search(r"CVE-\d+-\d+", r).group() for r in rows]  # type: ignore[union-attr]
    assert ids[:10] == [f"CVE-2024-{i:04d}" for i in range(15, 25)]  # CRITICAL first, then by id
    assert ids[10:] == [f"CVE-2024-{i:04d}" for i in range(10)]
    assert "**Blocking findings** (30, most severe first):" in body and "…and 10 more." in body
    assert "…and 25 more." in note(image("a", blocked(blocking=tuple(items))), max_listed=0)


def test_counts_absent_keys_are_zero_and_untriaged_only_when_nonzero() -> None:
    body = note(image("a", verdict(counts={Severity.CRITICAL: 2, Severity.UNTRIAGED: 0})))
    assert "| CRITICAL | HIGH | MEDIUM | LOW | INFORMATIONAL | UNDEFINED |\n|---:|" in body
    assert "| 2 | 0 | 0 | 0 | 0 | 0 |" in body and "UNTRIAGED" not in body
    body = note(image("a", verdict(counts={Severity.UNTRIAGED: 3}, enhanced=True)))
    assert "| INFORMATIONAL | UNDEFINED | UNTRIAGED |" in body and "| 0 | 0 | 0 | 0 | 0 | 0 | 3 |" in body
    assert "enhanced scanning" in body


def test_non_blocking_findings_are_only_counted() -> None:
    v = blocked(2, counts={Severity.HIGH: 2, Severity.LOW: 5, Severity.MEDIUM: 1})
    body = note(image("a", v))
    assert "6 non-blocking findings counted above, not listed." in body
    assert body.count("| [`CVE") == 2


def test_advisory_links() -> None:
    items = (
        finding("CVE-2024-0001", url="https://security-tracker.debian.org/tracker/CVE-2024-0001"),
        finding("CVE-2024-0002", url="javascript:alert(1)"),
        finding("GHSA-abcd-efgh-ijkl", url="https://github.com/advisories/GHSA-abcd-efgh-ijkl"),
        finding("ALAS-2024-1", url="https://evil.example/ALAS-2024-1"),
        finding("CVE-2024-1x", url=""),
    )
    body = note(image("a", blocked(blocking=items, blocking_total=5)))
    assert "[`CVE-2024-0001`](https://security-tracker.debian.org/tracker/CVE-2024-0001)" in body
    assert "[`CVE-2024-0002`](https://nvd.nist.gov/vuln/detail/CVE-2024-0002)" in body
    assert "[`GHSA-abcd-efgh-ijkl`](https://github.com/advisories/GHSA-abcd-efgh-ijkl)" in body
    assert "| `ALAS-2024-1` |" in body and "| `CVE-2024-1x` |" in body and "evil" not in body


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://nvd.nist.gov/vuln/detail/CVE-2024-1", True),
        ("http://people.ubuntu.com/~ubuntu-security/cve/CVE-2024-1", True),
        ("https://access.redhat.com/errata/RHSA-2024:1234", True),
        ("https://github.com/advisories/GHSA-x", True),
        ("https://github.com/evil/repo", False),
        ("https://nvd.nist.gov.evil.com/x", False),
        ("https://nvd.nist.gov@evil.com/x", False),
        ("https://nvd.nist.gov:8443/x", False),
        ("https://github.com/advisories/../evil", False),
        ("https://nvd.nist.gov/x)(y", False),
        ('https://nvd.nist.gov/x"onmouseover', False),
        ("https://nvd.nist.gov/a b", False),
        ("https://nvd.nist.gov/a|b", False),
        ("javascript:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("ftp://nvd.nist.gov/x", False),
        ("//nvd.nist.gov/x", False),
        ("https://nvd.nist.gov/" + "a" * 400, False),
    ],
)
def test_safe_url(url: str, ok: bool) -> None:
    assert (safe_url(url) == url) is ok


def test_escaping_helpers() -> None:
    assert md_text("@all /merge <b>") == "@\u200dall \\/merge &lt;b&gt;"
    assert md_text("see https://x.io or www.x.io #1") == (
        "see https\\:\u200d\\/\\/x\\.io or www\u200d\\.x\\.io \\#\u200d1"
    )
    assert md_code("a`b\n<!-- c -->") == "`aˋb <\u200b!-- c -->`"
    assert table_cell("a|b\\") == "`a\\|b⧵`" and table_cell("") == "–"
    assert table_cell("x" * 500).endswith("…`") and len(table_cell("x" * 500)) == 122
    assert md_fence("ok\n /merge\n> /close\n```") == "```text\nok\n\u200b /merge\n\u200b> /close\nˋˋˋ\n```"


@pytest.mark.parametrize(
    ("label", "url", "expected"),
    [
        ("CVE-1", "https://osv.dev/CVE-1", "[`CVE-1`](https://osv.dev/CVE-1)"),
        ("CVE-1", "https://evil.example/", "`CVE-1`"),
        ("a b", "https://osv.dev/x", "`a b`"),  # only id-like labels become link text
        ("x](javascript:y)", "https://osv.dev/x", "`x](javascript:y)`"),
    ],
)
def test_safe_link(label: str, url: str, expected: str) -> None:
    assert safe_link(label, url) == expected


def test_note_has_marker() -> None:
    assert note_has_marker(MARKER + "\nbody") and note_has_marker("\n  " + MARKER)
    assert not note_has_marker("quoting " + MARKER) and not note_has_marker("")


def test_body_cap_with_10_images_of_5000_findings() -> None:
    items = tuple(finding(f"CVE-2024-{i:05d}", Severity.CRITICAL, package="p" * 200) for i in range(5000))
    images = [image(f"repo-{n}", blocked(blocking=items, blocking_total=5000)) for n in range(10)]
    body = note(*images, max_listed=5000)
    assert_inert(body)
    assert len(body) <= report.BODY_BUDGET
    assert body.count("#### BLOCKED") == 10 and body.count("…and ") == 10  # every table was cut, none dropped
    default = note(*images)
    assert default.count("| [`CVE") == 200 and default.count("…and 4980 more.") == 10


def test_body_cap_drops_sections_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "BODY_BUDGET", 6000)
    body = note(*[image(f"repo-{n:02d}", blocked(5)) for n in range(40)])
    assert len(body) <= 6000
    assert_inert(body)
    assert re.search(r"_\d+ more images not shown", body) and "`repo-00:" in body and "`repo-39:" not in body


# --- hostile scanner text ------------------------------------------------------------------------

HOSTILE = [
    "@all",
    "@group/sub",
    "/merge",
    "\n/approve",
    "/close",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    MARKER,
    "[x](javascript:alert(1))",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "a|b|c",
    "```\n/merge\n```",
    "``",
    "\r\n",
    "\u202e",
    "x" * 100_000,
    "&lt;script&gt;",
    "\\|",
    "a\\",
    "> /merge",
    "  /unassign @all",
    "\u2028/merge",
    "\x0b/merge",
    "\x85/merge",
    "~~~\n/merge",
    "\t/close",
    "\u3000/merge",
    "https://evil.example/x",
    "http://nvd.nist.gov@evil.com/",
    "https://notgithub.com/advisories/x",
    "www.evil.com",
    "#1 !2 ~bug %v1 &3",
    "<!--",
    "-->",
    "`@all`",
    "\u200d@all",
    "@\u200dall",
    "`\n/merge",
    "a\n\n---\n#### PASSED",
    "| x | y |\n|---|---|",
]
FIELDS = [
    "id",
    "package",
    "installed_version",
    "fixed_version",
    "url",
    "description",
    "detail",
    "summary",
    "remediation",
    "digest",
    "repository",
    "tag",
    "registry",
    "status_name",
    "project_path",
    "sha",
]
_FINDING_FIELDS = {"id", "package", "installed_version", "fixed_version", "url", "description"}
_VERDICT_FIELDS = {"detail", "summary", "remediation", "digest"}


def hostile_note(values: dict[str, str]) -> str:
    f = {k: v for k, v in values.items() if k in _FINDING_FIELDS}
    v = {k: v for k, v in values.items() if k in _VERDICT_FIELDS}
    i = {k: v for k, v in values.items() if k in {"tag", "registry", "status_name"}}
    repo = values.get("repository", "app/api")
    items = (replace(finding(), **f), replace(finding("CVE-2024-0002", Severity.CRITICAL), **f))
    images = [
        image(repo, replace(blocked(blocking=items, blocking_total=2), **v), **i),
        image(repo, replace(verdict(Reason.SCAN_FAILED), **v), **i),
        image(repo, replace(verdict(Reason.PASSED, counts={Severity.LOW: 1}), **v), **i),
        image(repo, None, GateState.WAITING, **i),
    ]
    return render_note(images, project_path=values.get("project_path", "g/p"), sha=values.get("sha", "0123abcd"))


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE, ids=lambda s: repr(s[:24]))
def test_hostile_text_is_inert(field: str, value: str) -> None:
    assert_inert(hostile_note({field: value}))
    if field in ("summary", "repository"):
        for payload in (status_for(verdict(summary=value)), status_waiting(value), status_polling(value, value)):
            assert len(payload.description) <= DESCRIPTION_LIMIT
            assert all(unicodedata.category(ch)[0] != "C" and ch not in "\u2028\u2029" for ch in payload.description)


_TRICKY = st.text(alphabet="@/<>`|\\\n\r\t []()!#:~&;-=*_.aZ0\u202e\u2028\u200d\x00\x0b>", max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({name: st.one_of(st.text(max_size=200), _TRICKY) for name in FIELDS}))
def test_random_text_everywhere_stays_inert(values: dict[str, str]) -> None:
    assert_inert(hostile_note(values))
    assert len(status_for(verdict(summary=values["summary"])).description) <= DESCRIPTION_LIMIT
