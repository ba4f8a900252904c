"""``python -m streams`` is the ``streamscore`` command."""

from streams.cli import main

main()
