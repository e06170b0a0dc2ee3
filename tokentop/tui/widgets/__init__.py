"""The live view's widgets."""
