"""``python -m streams`` is the ``streamscore`` command."""

from streams.cli.main import main

main()
