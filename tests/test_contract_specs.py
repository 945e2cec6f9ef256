from meguri.testing.contract_specs import *  # noqa: F403
