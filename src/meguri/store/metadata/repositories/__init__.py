"""One repository module per aggregate; each takes a ``Database`` (see ``_engine.py``)."""
