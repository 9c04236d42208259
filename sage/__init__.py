"""SAGE: dataflow pipelines whose tasks talk through queues (sage.utils is the queue layer)."""

__version__ = "0.1.0"
