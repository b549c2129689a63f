"""Helpers shared by several test files (import as ``helpers.<module>``)."""
