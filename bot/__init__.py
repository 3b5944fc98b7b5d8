"""ecr-scan-gate: core/ (pure rules), adapters/ (ECR, GitLab, Redis, Celery), web/ (receiver), cli/ (check, doctor)."""
