"""Re-export: the access-control tables' migrations live with the rest of the schema in
:mod:`climbd.storage.access_schema` (storage must not import security)."""

from climbd.storage.access_schema import OWNERS_MIGRATION, SECURITY_MIGRATION

__all__ = ["OWNERS_MIGRATION", "SECURITY_MIGRATION"]
