"""One ECR double for tests and the demo: moto behind a proxy scripting scan timelines, errors, pages."""

from .book import Call
from .builders import FIXTURES_DIR, basic_finding, enhanced_finding, load_fixture, scan_body, severity_counts
from .cli import main
from .constants import (
    BASIC_SEVERITIES,
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    ENHANCED_SEVERITIES,
    SCAN_OP,
    SCAN_STATUSES,
)
from .control import EcrControl
from .double import EcrDouble
from .proxy import ECR_TARGET_PREFIX
from .steps import normalize_steps

__all__ = [
    "BASIC_SEVERITIES",
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "ECR_TARGET_PREFIX",
    "ENHANCED_SEVERITIES",
    "FIXTURES_DIR",
    "SCAN_OP",
    "SCAN_STATUSES",
    "Call",
    "EcrControl",
    "EcrDouble",
    "basic_finding",
    "enhanced_finding",
    "load_fixture",
    "main",
    "normalize_steps",
    "scan_body",
    "severity_counts",
]
