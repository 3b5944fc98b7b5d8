"""Pure escaping helpers that make untrusted text inert in GitLab-flavoured Markdown."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit

# Strategy (one rule per threat, so a reviewer can check each):
# - Values (ids, packages, versions, digests, repository:tag) go into code spans: GitLab expands no
#   mention, reference, emoji, link or HTML inside code. Backticks in them become U+02CB so a value can
#   never close its span, and "<" before a tag-like character gets a zero-width space so not even a naive
#   scanner (or a forged `<!-- ecr-scan-gate -->` marker) sees a tag.
# - Prose (summary, remediation) is escaped text: HTML entities for & < >, a backslash before every other
#   ASCII punctuation character, and a zero-width joiner after @ and the other reference sigils, because
#   GitLab finds mentions/references in the *rendered* text, where backslashes and entities are gone.
# - ECR's own multi-line text goes into a ``` fence that it cannot close (no backticks survive); any line
#   that would start with "/" (after whitespace or ">") is prefixed with a zero-width space, so GitLab's
#   quick-action scanner (a line-start regex with its own idea of fences) never sees a command.
# - Control, format (bidi overrides, zero-width), line/paragraph-separator and unassigned characters
#   are dropped from all untrusted text first; only the zero-width characters added here remain.
ZWJ = "\u200d"
ZWSP = "\u200b"
BACKTICK_STANDIN = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, is not one
BACKSLASH_STANDIN = "\u29f5"  # REVERSE SOLIDUS OPERATOR: a "\" that cannot escape a table pipe
CELL_LIMIT = 120

_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Everything that can start or change a Markdown construct, a line-leading "/" and the ":" of a URL.
_BACKSLASHED = frozenset("\\`*_{}[]()#+-.!|~=^$:/")
# GitLab reference prefixes: users/groups, issues, MRs, labels, milestones, snippets, epics, iterations,
# [vulnerability:…]. A zero-width joiner after one keeps the text readable but unmatchable.
_SIGILS = frozenset("@#!~%$&^*[")
_TAG_START = re.compile(r"<(?=[A-Za-z!/?])")
_QUICK_ACTION_LINE = re.compile(r"[\s>]*/")

# Hosts whose advisory pages we link to, each with the path a link must start with.
ADVISORY_SOURCES: tuple[tuple[str, str], ...] = (
    ("nvd.nist.gov", "/"),
    ("cve.mitre.org", "/"),
    ("www.cve.org", "/"),
    ("security-tracker.debian.org", "/"),
    ("www.debian.org", "/security/"),
    ("ubuntu.com", "/security/"),
    ("www.ubuntu.com", "/security/"),
    ("people.canonical.com", "/~ubuntu-security/"),
    ("people.ubuntu.com", "/~ubuntu-security/"),
    ("access.redhat.com", "/"),
    ("alas.aws.amazon.com", "/"),
    ("github.com", "/advisories/"),
    ("osv.dev", "/"),
    ("security.alpinelinux.org", "/"),
    ("www.suse.com", "/security/"),
    ("linux.oracle.com", "/"),
    ("pkg.go.dev", "/vuln/"),
    ("rustsec.org", "/advisories/"),
)
# No userinfo, port, quotes, parentheses, brackets, spaces, pipes, backslashes or backticks: such a URL
# could not break out of a link destination or a table cell even if a renderer were sloppy.
_URL_SHAPE = re.compile(r"https?://[a-z0-9.-]+(?:/[A-Za-z0-9\-._~/?#=&%+,;:]*)?", re.ASCII)
_URL_MAX = 300
_CVE_ID = re.compile(r"CVE-[0-9]{4}-[0-9]{4,19}", re.ASCII)
# Ids we are willing to use as link text (CVE, GHSA, ALAS, RHSA-2024:1234, …).
_LINKABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,79}", re.ASCII)


def clean(text: object, limit: int, *, multiline: bool = False) -> str:
    """Untrusted text without control/format characters, whitespace normalised, at most `limit` chars."""
    raw = "" if text is None else str(text)
    # Bound the work on hostile megabyte strings before the per-character pass.
    cut = len(raw) > limit * 4 + 64
    raw = raw[: limit * 4 + 64].replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    for ch in raw:
        if ch == "\n" and multiline:
            out.append(ch)
        elif ch in "\t\n" or (ch.isspace() and unicodedata.category(ch) not in _DROP_CATEGORIES):
            out.append(" ")
        elif unicodedata.category(ch) not in _DROP_CATEGORIES:
            out.append(ch)
    s = "".join(out)
    if multiline:
        s = "\n".join(line.rstrip() for line in s.split("\n")).strip("\n")
    else:
        s = re.sub(" {2,}", " ", s).strip()
    if cut or len(s) > limit:
        s = s[: max(0, limit - 1)].rstrip() + "…"
    return s


def _neutral(s: str) -> str:
    """Already-clean text that can sit inside a code span or fence: no backticks, no tag starts."""
    return _TAG_START.sub("<" + ZWSP, s.replace("`", BACKTICK_STANDIN))


def _escape_text(s: str) -> str:
    out: list[str] = []
    for i, ch in enumerate(s):
        out.append(_ENTITIES.get(ch) or ("\\" + ch if ch in _BACKSLASHED else ch))
        nxt = s[i + 1 : i + 2]
        if ch in _SIGILS and nxt and not nxt.isspace():
            out.append(ZWJ)
        elif ch == ":" and s.startswith("//", i + 1):
            out.append(ZWJ)  # "scheme://" would be autolinked from the rendered text
        elif nxt == "." and s[max(0, i - 2) : i + 1].lower() == "www":
            out.append(ZWJ)  # "www." is autolinked too
    return "".join(out)


def md_text(text: object, limit: int = 500) -> str:
    """One line of untrusted prose, escaped so that it renders as plain text and nothing else."""
    return _escape_text(clean(text, limit))


def md_code(text: object, limit: int = 300) -> str:
    """An untrusted value as an inline code span ("" for an empty value)."""
    s = _neutral(clean(text, limit))
    return f"`{s}`" if s else ""


def md_inline(text: object, limit: int = 500) -> str:
    """One line of prose whose `backticked` parts (commands in remediation texts) become code spans."""
    parts = clean(text, limit).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick is just text
        last = parts.pop()
        parts[-1] += "`" + last
    rendered = []
    for i, part in enumerate(parts):
        if i % 2:
            rendered.append(f"`{_neutral(part.strip())}`" if part.strip() else "")
        else:
            rendered.append(_escape_text(part))
    return "".join(rendered)


def md_fence(text: object, limit: int = 2000, max_lines: int = 40) -> str:
    """Untrusted multi-line text as a fenced code block it cannot close ("" for empty text)."""
    s = _neutral(clean(text, limit, multiline=True))
    if not s.strip():
        return ""
    lines = s.split("\n")
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], "…"]
    lines = [ZWSP + line if _QUICK_ACTION_LINE.match(line) else line for line in lines]
    return "\n".join(["```text", *lines, "```"])


def table_cell(text: object, limit: int = CELL_LIMIT) -> str:
    """An untrusted value as a table cell: a code span with pipes escaped, or "–" when empty."""
    # A "\" before our "\|" would escape the backslash instead of the pipe in some GFM table scanners.
    s = _neutral(clean(text, limit).replace("\\", BACKSLASH_STANDIN))
    return f"`{s}`".replace("|", "\\|") if s else "–"


def table_row(cells: Iterable[str]) -> str:
    """A table row from cells that are already escaped."""
    return "| " + " | ".join(cells) + " |"


def safe_url(url: object) -> str | None:
    """The URL if it is a plain http(s) link to a known advisory source, else None."""
    if not isinstance(url, str) or len(url) > _URL_MAX or not _URL_SHAPE.fullmatch(url):
        return None
    parts = urlsplit(url)
    path = parts.path or "/"
    if ".." in path or "%2e" in path.lower():
        return None  # no climbing out of an allowed path prefix
    host = parts.hostname or ""
    for allowed, prefix in ADVISORY_SOURCES:
        if host == allowed and path.startswith(prefix):
            return url
    return None


def advisory_url(finding_id: object, url: object) -> str | None:
    """Where a finding's id should link: its own URL if safe, else NVD for a well-formed CVE id."""
    found = safe_url(url)
    if found:
        return found
    if isinstance(finding_id, str) and _CVE_ID.fullmatch(finding_id):
        return f"https://nvd.nist.gov/vuln/detail/{finding_id}"
    return None


def safe_link(label: object, url: object, *, cell: bool = True) -> str:
    """The label as code, linked only when the URL is an allowed advisory URL and the label is an id."""
    code = table_cell(label) if cell else md_code(label)
    target = safe_url(url)
    if target and isinstance(label, str) and _LINKABLE_ID.fullmatch(label):
        return f"[{code}]({target})"
    return code
