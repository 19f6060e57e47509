"""Tests of daemon/pipeline/, one file per module."""
