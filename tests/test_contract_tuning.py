from meguri.testing.contract_tuning import *  # noqa: F403
