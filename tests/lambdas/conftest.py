"""Fixtures for the Lambda tests; the helpers live in lambda_harness.py."""

from lambda_harness import aws, context, fake_planner, lambda_env, request_doc  # noqa: F401
