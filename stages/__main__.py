"""``python -m stages <name> [args]``: run stage ``<name>`` as ``python -m stages.<name> [args]`` would, in a
process forked from one that has already imported torch and the other heavy libraries (:mod:`synthgap.launch`)."""

from synthgap.launch import main

main("stages")
