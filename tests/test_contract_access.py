from meguri.testing.contract_access import *  # noqa: F403
