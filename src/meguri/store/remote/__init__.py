"""The metadata store of a meguri platform server, over HTTP (``MEGURI_SERVER``).

:class:`RemoteMetadataStore` stands wherever a :class:`~meguri.store.metadata.MetadataStore`
does; the server (``meguri.server._r_store``) runs the real repositories behind its access
rules.
"""

from meguri.store.remote._client import RemoteMetadataStore

__all__ = ["RemoteMetadataStore"]
