"""Tests of daemon/tell/, one file per module."""
