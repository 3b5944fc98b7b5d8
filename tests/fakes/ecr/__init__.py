"""One ECR double for tests and the demo: moto behind a proxy scripting scan timelines, errors, pages, events."""

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
from .events import (
    EVENT_FIXTURES_DIR,
    EventSpec,
    SentEvent,
    ecr_image_action_event,
    ecr_image_scan_event,
    inspector2_finding_event,
    inspector2_scan_event,
    load_event_fixture,
    repository_arn,
)
from .proxy import ECR_TARGET_PREFIX
from .steps import normalize_steps

__all__ = [
    "BASIC_SEVERITIES",
    "DEFAULT_ACCOUNT",
    "DEFAULT_REGION",
    "ECR_TARGET_PREFIX",
    "ENHANCED_SEVERITIES",
    "EVENT_FIXTURES_DIR",
    "FIXTURES_DIR",
    "SCAN_OP",
    "SCAN_STATUSES",
    "Call",
    "EcrControl",
    "EcrDouble",
    "EventSpec",
    "SentEvent",
    "basic_finding",
    "ecr_image_action_event",
    "ecr_image_scan_event",
    "enhanced_finding",
    "inspector2_finding_event",
    "inspector2_scan_event",
    "load_event_fixture",
    "load_fixture",
    "main",
    "normalize_steps",
    "repository_arn",
    "scan_body",
    "severity_counts",
]
