"""Tests of daemon/http/, one file per module."""
