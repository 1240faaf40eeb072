"""``python -m docrelay.cli``: the ``docrelay`` command (worker processes of ``run``)."""

from . import main

main()
