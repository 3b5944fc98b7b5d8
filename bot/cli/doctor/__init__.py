"""`ecr-scan-gate doctor`: the setup checks, by concern (GitLab, ECR), and the command that runs them."""
