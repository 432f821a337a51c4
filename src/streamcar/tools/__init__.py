"""The operator tools behind ``streamcar offsets|replay|dlq|tail|produce|topics``, each usable from the CLI and as
functions.

Kafka is the source of truth: these tools look at and move consumer groups, re-run ranges of a topic, inspect or
redrive dead letters, and create and describe topics, always against the cluster itself. Each fails within
seconds, in one line, when the cluster cannot be reached (:mod:`streamcar.tools._reach`).
"""
