"""Trace replay through the placement engine (the FGD paper's experiment)."""
