"""Evaluation metrics (one module per benchmark family)."""
