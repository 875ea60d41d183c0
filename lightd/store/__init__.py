"""Document storage: atomic JSON documents in a folder (desired and observed state)."""

from lightd.store.documents import DocumentStore, encode_document

__all__ = ["DocumentStore", "encode_document"]
