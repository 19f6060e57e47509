"""Tests of daemon/schedule/, one file per module."""
