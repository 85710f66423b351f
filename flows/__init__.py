"""Prefect flows: compare architectures, train one variant, and the cnn-lab CLI."""
