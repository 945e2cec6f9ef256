from meguri.testing.contract_monitor import *  # noqa: F403
