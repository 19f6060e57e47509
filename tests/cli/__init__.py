"""Tests of daemon/cli/, one file per module."""
