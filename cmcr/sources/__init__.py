"""Readers for raw data sources (point clouds, …) with clear per-item errors."""
