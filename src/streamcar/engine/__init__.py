"""The engine: consume, schedule, call, publish or dead-letter, complete, commit."""
