"""The data set's health checks (``vistrain doctor``)."""
