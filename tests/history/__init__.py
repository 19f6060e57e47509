"""Tests of daemon/history/, one file per module."""
