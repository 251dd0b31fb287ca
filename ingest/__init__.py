"""Producer side of the pipeline: applications send JSON events to Kafka.

- :class:`Emitter` / :class:`EmitterConfig`: asynchronous, keyed, bounded sending that never
  blocks a caller for longer than ``max_block_ms``; :class:`DeliveryError` when Kafka cannot
  take an event now.
- :func:`encode_event`: the pure event -> ``(key, value)`` bytes step.
- ``ingest.synthetic`` (load generation) and ``ingest.cli`` (the ``ingest`` command) are
  imported by module, not re-exported.
"""

from ingest.emitter import DeliveryError, Emitter, EmitterConfig
from ingest.encoding import encode_event

__all__ = ["DeliveryError", "Emitter", "EmitterConfig", "encode_event"]
