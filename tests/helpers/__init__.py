"""Helpers shared by the tests (servers live in :mod:`streamer.testing`)."""
