"""One checker module per dependency kind, imported only when a target of that kind exists.

:func:`build_checker` maps a target's ``kind`` to its checker class. A kind whose driver
is missing raises :class:`~healthbus.probes.DriverMissing` naming the extra to install
(``pip install 'healthbus-probes[redis]'``), at start-up, not at the first check.
"""

from __future__ import annotations

import importlib
from typing import Final

from healthbus.probes._base import Checker
from healthbus.protocol import TargetConfig

# kind -> (module, class)
_REGISTRY: Final[dict[str, tuple[str, str]]] = {
    "redis": ("healthbus.probes._checkers._redis", "RedisChecker"),
    "postgres": ("healthbus.probes._checkers._postgres", "PostgresChecker"),
    "sqlalchemy": ("healthbus.probes._checkers._sqlalchemy", "SqlAlchemyChecker"),
    "milvus": ("healthbus.probes._checkers._milvus", "MilvusChecker"),
    "elasticsearch": ("healthbus.probes._checkers._elasticsearch", "ElasticsearchChecker"),
    "tcp": ("healthbus.probes._checkers._tcp", "TcpChecker"),
    "http": ("healthbus.probes._checkers._http", "HttpChecker"),
}


def build_checker(target: TargetConfig) -> Checker:
    """The checker for ``target``; DriverMissing when its driver is not installed."""
    module_name, class_name = _REGISTRY[target.kind]
    module = importlib.import_module(module_name)
    checker: Checker = getattr(module, class_name)(target)
    return checker
