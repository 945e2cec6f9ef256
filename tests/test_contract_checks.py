from meguri.testing.contract_checks import *  # noqa: F403
