"""``python -m frankensweep``: the ``frankensweep`` command."""

from frankensweep.cli import main

main()
