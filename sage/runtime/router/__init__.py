"""Routing between task instances: packets, end markers, batching, backpressure."""
