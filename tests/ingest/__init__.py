"""Tests of the producer side (``ingest``): encoding and synthetic data, then the real Kafka."""
