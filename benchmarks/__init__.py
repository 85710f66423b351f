"""Benchmarks that print figures: the default recipe against a plain PyTorch reference loop, and test-made data."""
