"""ecr-scan-gate Celery workers: orchestration of gates."""
