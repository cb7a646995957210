"""Response cache: exact match and a semantic plug-in."""
