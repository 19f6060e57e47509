"""Tests of daemon/runner/, one file per module."""
