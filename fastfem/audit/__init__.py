"""Dataset audit: stream a dataset through the jitted explainer into a resumable result store."""

from fastfem.audit.run import AuditSummary, audit
from fastfem.audit.store.parts import ResultStore

__all__ = ["AuditSummary", "ResultStore", "audit"]
