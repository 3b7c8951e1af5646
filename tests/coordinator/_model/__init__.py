"""An independent model of the decision core's rules, for a differential property test.

Written from docs/coordinator.md and the prose of the decider's module docstring only
(not from the code): see :mod:`._decider` and tests/coordinator/test_core_model.py.
"""

from ._decider import Model

__all__ = ["Model"]
