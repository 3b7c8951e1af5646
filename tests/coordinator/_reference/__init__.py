"""The plain reference decider, the oracle of ``test_core_reference.py`` (see :mod:`._decider`)."""

from ._decider import Decider

__all__ = ["Decider"]
