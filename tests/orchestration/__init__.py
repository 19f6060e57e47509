"""Tests of daemon/orchestration/, one file per module."""
