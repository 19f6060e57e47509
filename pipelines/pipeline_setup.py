"""Composes with hello_world through `additional_modules = ["pipeline_setup"]`:
it supplies the `salutation` that hello_world otherwise defaults."""

from datetime import datetime


def salutation(hour: int | None = None) -> str:
    hour = datetime.now().hour if hour is None else hour
    if hour < 12:
        return "Good morning"
    return "Good afternoon" if hour < 18 else "Good evening"
