from meguri.testing.contract_runs import *  # noqa: F403
