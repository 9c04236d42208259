"""SAGE's user API: ``sage.core.api`` (environments, streams) and ``sage.core.function``."""
