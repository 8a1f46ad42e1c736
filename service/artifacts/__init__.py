"""The artifact store: one interface (:class:`ArtifactStore`), a local and an S3 implementation."""

from __future__ import annotations

from service.artifacts.base import ArtifactStore, validate_key
from service.artifacts.local import LocalStore
from service.artifacts.s3 import S3Store
from service.settings import LocalArtifacts, Settings


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The store ``QAT_ARTIFACTS`` names: a local directory, or ``s3://bucket/prefix``."""
    where = settings.artifacts
    if isinstance(where, LocalArtifacts):
        return LocalStore(where.root)
    return S3Store(where.bucket, where.prefix, settings.s3_endpoint_url, settings.s3_public_endpoint_url)


__all__ = ["ArtifactStore", "LocalStore", "S3Store", "store_from_settings", "validate_key"]
