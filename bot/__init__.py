"""ecr-scan-gate: the web receiver and the pure core."""
