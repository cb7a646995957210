"""Guardrails: personal data masked before the upstream, answers screened as they stream."""
