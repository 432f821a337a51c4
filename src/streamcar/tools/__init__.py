"""The operator tools behind ``streamcar offsets|replay|dlq|tail|produce``, each usable from the CLI and as functions.

Kafka is the source of truth: these tools look at and move consumer groups, re-run ranges of a topic, and
inspect or redrive dead letters, always against the cluster itself.
"""
