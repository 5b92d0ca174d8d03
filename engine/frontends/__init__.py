"""The front doors: the command line and the GIMP bridge; all call engine.api."""
