"""Test helpers shipped with meguri: backend fixtures and the contract suites.

Use ``pytest_plugins = ["meguri.testing.pytest_plugin"]`` in a conftest, then import a
contract module's tests (``from meguri.testing.contract_runs import *``) into a test module:
they run once per backend.
"""
