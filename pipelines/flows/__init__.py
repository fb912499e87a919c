"""Prefect flows: thin wrappers over the plain steps in pipelines/round_steps.py."""
