"""Thin adapters at the edges: ECR (boto3), GitLab (python-gitlab), the Redis store and the Celery queue."""
