"""``make demo`` (``python -m demo``): the whole product on the local stack in a few minutes.

Creates the topic ``demo.events``, emits 100,000 synthetic events (0.1% malformed) with
``ingest gen``, runs ``batcher run`` until Kafka's committed offsets reach the log end, shows
what landed in PostgreSQL and HDFS, ``batcher status``, the metrics and the dead letters, then
stops the batcher with SIGTERM. The consumer group is fixed (``demo-batcher``), so every run
resumes where the last one stopped and adds 100,000 more events.
"""
