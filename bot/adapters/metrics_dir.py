"""Where a process group keeps its Prometheus multiprocess files: set before prometheus_client is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(kind: str) -> str:
    """The directory in force for this process group (`kind`: web, worker), fresh for this start.

    prometheus_client picks its multiprocess storage when first imported, so this runs before that. Files of
    a previous start would be added into every scrape forever: a directory given in the environment is
    emptied, else a new one is made (one per gunicorn master or Celery worker, so two never mix).
    """
    given = os.environ.get(MULTIPROC_ENV, "")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return given
    made = tempfile.mkdtemp(prefix=f"ecr-scan-gate-metrics-{kind}-")
    os.environ[MULTIPROC_ENV] = made
    return made
