from meguri.testing.contract_models import *  # noqa: F403
