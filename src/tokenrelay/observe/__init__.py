"""What the gateway tells its operators about each request, beyond the compact log line: the
audit log (``observe.audit``), one JSON line per request, safe to keep."""

from tokenrelay.observe.audit import (
    AuditLine,
    AuditLog,
    AuditSettings,
    PromptInfo,
    audit_line,
    fingerprint,
    mask,
    masked_prefix,
    prompt_of,
)

__all__ = [
    "AuditLine",
    "AuditLog",
    "AuditSettings",
    "PromptInfo",
    "audit_line",
    "fingerprint",
    "mask",
    "masked_prefix",
    "prompt_of",
]
