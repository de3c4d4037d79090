"""Orchestrators: the full run and the checkpoint audit.

The one layer that calls every other (datasets → trainers → attacks → audit →
reports); the CLI formats what these return.
"""
