pytest_plugins = ["meguri.testing.pytest_plugin"]
