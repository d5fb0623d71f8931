"""Helpers for tests: event factories, waiting for conditions with a deadline."""
