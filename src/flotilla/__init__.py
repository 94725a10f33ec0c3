"""Flotilla: microservices for Python."""
