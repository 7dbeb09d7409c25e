"""The ``vistrain`` command line: one module per sub-command, registered in :mod:`.main`."""
