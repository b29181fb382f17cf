"""``python -m triggergate`` is the ``triggergate`` command."""

from triggergate.cli import main

main()
