"""Pure: will ECR scan a pushed image? Repository scanOnPush or a registry scanning rule (doctor and CLI)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class ScanningRule:
    frequency: str  # SCAN_ON_PUSH, CONTINUOUS_SCAN or MANUAL
    filters: tuple[str, ...]  # WILDCARD repository filters


@dataclass(frozen=True)
class RegistryScanning:
    """GetRegistryScanningConfiguration: the caller's own registry in that region (it takes no registryId)."""

    registry_id: str
    scan_type: str  # BASIC or ENHANCED
    rules: tuple[ScanningRule, ...]


class Coverage(StrEnum):
    REPOSITORY = "repository"  # BASIC, the repository's scanOnPush=true
    RULE = "rule"  # a registry rule matches (BASIC SCAN_ON_PUSH, or ENHANCED)
    OFF = "off"  # BASIC, scanOnPush=false and no rule matches
    ENHANCED_NO_RULE = "enhanced_no_rule"  # ENHANCED and no rule matches (scanOnPush is then ignored)
    UNKNOWN = "unknown"  # the registry rules could not be read


@dataclass(frozen=True)
class Covered:
    coverage: Coverage
    how: str = ""  # e.g. "registry rule SCAN_ON_PUSH filter 'ap*'", for the text


def filter_matches(pattern: str, repository: str) -> bool:
    """ECR registry filters: `*` matches any run of characters; a filter without `*` matches as a substring."""
    if "*" not in pattern:
        return pattern in repository
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), repository) is not None


def coverage(repository: str, scan_on_push: bool, registry: RegistryScanning | None) -> Covered:
    """How (or whether) a push of this repository is scanned."""
    if registry is None:
        return Covered(Coverage.UNKNOWN, "repository scanOnPush=" + ("true" if scan_on_push else "false"))
    wanted = ("SCAN_ON_PUSH", "CONTINUOUS_SCAN") if registry.scan_type == "ENHANCED" else ("SCAN_ON_PUSH",)
    for rule in registry.rules:
        hit = next((f for f in rule.filters if filter_matches(f, repository)), None)
        if rule.frequency in wanted and hit is not None:
            kind = "ENHANCED (Amazon Inspector)" if registry.scan_type == "ENHANCED" else "BASIC"
            return Covered(Coverage.RULE, f"{kind} scanning, registry rule {rule.frequency} filter {hit!r}")
    if registry.scan_type == "ENHANCED":
        return Covered(Coverage.ENHANCED_NO_RULE)
    if scan_on_push:
        return Covered(Coverage.REPOSITORY, "BASIC scanning on push (repository scanOnPush=true)")
    return Covered(Coverage.OFF)
