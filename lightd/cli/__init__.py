"""The operator commands of ``lightd``: validate, plan, status, apply, schema.

Each command is a function that returns its exit code; ``lightd.__main__`` only parses
arguments. The commands talk to a running daemon over its API (``lightd.cli.client``)
or read files and the engine directly; they must never write desired documents.
"""
