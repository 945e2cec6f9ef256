from meguri.testing.contract_deployments import *  # noqa: F403
