"""Test tools that ship with Flotilla: a whole system in one process, and a fake clock."""

from flotilla.events.consumer import Outcome
from flotilla.testing.clock import FakeClock
from flotilla.testing.cluster import Cluster, wait_for
from flotilla.testing.events import EventsKit

__all__ = ["Cluster", "EventsKit", "FakeClock", "Outcome", "wait_for"]
