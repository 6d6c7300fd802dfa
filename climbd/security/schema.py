"""Re-export: the access-control tables' migration lives with the rest of the schema in
:mod:`climbd.storage.access_schema` (storage must not import security)."""

from climbd.storage.access_schema import SECURITY_MIGRATION

__all__ = ["SECURITY_MIGRATION"]
