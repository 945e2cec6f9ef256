from meguri.testing.contract_projects import *  # noqa: F403
