"""Encoder spaces. Importing this package registers the built-in ones (see :mod:`cmcr.spaces`)."""

from cmcr.encoders import demo  # noqa: F401
