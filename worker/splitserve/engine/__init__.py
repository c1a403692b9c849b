"""The engine package; see README for the module map."""
