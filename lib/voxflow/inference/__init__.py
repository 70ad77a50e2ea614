"""Predicting subjects (rule predict): sliding-window prediction of a store with the fold ensemble, the way back to
the subject's native grid, and the choice among configurations (rule choose_configuration)."""
