from meguri.testing.contract_audit import *  # noqa: F403
