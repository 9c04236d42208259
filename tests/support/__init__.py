"""Test support shared by the queue's fault, crash and stress tests (not a test module)."""
