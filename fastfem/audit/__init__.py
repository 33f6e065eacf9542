"""Dataset audit: stream a dataset through the jitted explainer into a resumable result store."""

from .flags import flag_rows
from .run import AuditSummary, audit
from .store import ResultStore

__all__ = ["AuditSummary", "ResultStore", "audit", "flag_rows"]
