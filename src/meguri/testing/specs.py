"""Spec texts for tests: the smallest valid ``meguri.yaml`` that later sections extend."""

MINIMAL_SPEC = """\
version: 1
project: churn
objective:
  problem: Customers leave.
  expected_outcome: Know who will.
  kpi: Churn rate.
requirements:
  functional:
    task: binary_classification
    target: churned
"""
