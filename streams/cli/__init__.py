"""The ``streamscore`` command line: every Typer command, and nothing else imports it.

``streams.cli.main`` holds the root app; each sub-command group lives in its own module and
imports the heavy parts it needs inside the command, so ``streamscore --help`` stays fast.
"""
