"""batcher package."""
