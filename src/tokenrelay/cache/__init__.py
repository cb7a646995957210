"""The response cache (issue 17): an exact-match cache of whole answers, keyed by the normalized
request and scoped to the caller's tenant, whose hits stream through any front like a live
answer. A domain package: no HTTP here (``tokenrelay.cache_relay`` wires it into the relay)."""
