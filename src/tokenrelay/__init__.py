"""tokenrelay: a streaming LLM gateway."""

__version__ = "0.1.0"
