"""Test tools that ship with Flotilla: a whole system in one process, and a fake clock."""

from flotilla.testing.clock import FakeClock
from flotilla.testing.cluster import Cluster, wait_for

__all__ = ["Cluster", "FakeClock", "wait_for"]
