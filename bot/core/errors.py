"""Exception types that encode retryability, so retry rules read from the type, not the message."""

from __future__ import annotations


class GateError(Exception):
    """Base for errors raised by the adapters. Messages never carry secrets."""


class TransientError(GateError):
    """Worth retrying: throttling, 5xx, timeouts, a 409 from a concurrent status update."""

    def __init__(self, message: str, retry_after: float | None = None, uncertain: bool = False) -> None:
        super().__init__(message)
        # Seconds the remote side asked us to wait (Retry-After), if it said.
        self.retry_after = retry_after
        # No answer came (timeout, dropped connection): a write may have been applied anyway.
        self.uncertain = uncertain


class PermanentError(GateError):
    """Retrying will not help: a 4xx that is our fault or a missing object."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        # The HTTP status the remote side answered, when there was one (the doctor explains 401 and 404).
        self.status = status


class ConfigError(GateError):
    """Configuration is invalid; `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems
