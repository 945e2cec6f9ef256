from meguri.testing.contract_artifacts import *  # noqa: F403
