"""Helpers shared by several test files (import as ``helpers.<module>``): property checks (``props``), property
classes shared by method test files (``shared_properties``), the two-rank MoE worker script and the lab's helpers."""
