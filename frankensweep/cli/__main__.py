"""``python -m frankensweep.cli``: the ``frankensweep`` command."""

from frankensweep.cli import main

main()
