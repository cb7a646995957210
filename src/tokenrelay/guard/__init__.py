"""Guardrails beyond injection: personal data masked before a request leaves and restored in
the answer's stream, and the answer itself checked as it streams (docs/guard.md)."""
