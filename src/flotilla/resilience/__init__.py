"""Calls that survive slow and dead replicas: breakers, retries, hedges, bulkheads, faults.

Each concern is one layer of the client (or server) pipeline
(:mod:`flotilla.pipeline`); what it decides is a policy in
:mod:`flotilla.resilience.policy`, apart from the mechanism that applies it.
"""
