"""Encoder spaces. Importing this package registers the built-in ones (see :mod:`cmcr.encoders.base`).

Heavy libraries (open_clip, laion_clap) are imported only when a space is built.
"""

from cmcr.encoders import clap, clip, demo, pointbert  # noqa: F401
