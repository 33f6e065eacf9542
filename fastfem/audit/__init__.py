"""Dataset audit: stream a dataset through the jitted explainer into a resumable result store."""

from fastfem.audit.flags import flag_rows
from fastfem.audit.run import AuditSummary, audit
from fastfem.audit.store.parts import ResultStore

__all__ = ["AuditSummary", "ResultStore", "audit", "flag_rows"]
