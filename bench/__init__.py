"""``python -m bench``: throughput of the batcher end to end on the local stack, against the
raw limits of each stage it uses and against two peers (a naive consumer, Quix Streams).

Modules: ``preload`` (the topic), ``raw`` (stage limits), ``endtoend`` (the daemon),
``peers`` (naive and Quix), ``profile`` (py-spy on the daemon), ``report`` (JSON, markdown,
chart). Measurement only: nothing here asserts a time.
"""
