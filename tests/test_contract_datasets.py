from meguri.testing.contract_datasets import *  # noqa: F403
