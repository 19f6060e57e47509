"""`on_webhook = { secret = "env:NAME" }`: the trigger table of a schedule that a signed
`POST {http}/hooks/{schedule}` starts (DESIGN.md, "Events"). Its secret is a reference
(daemon.secrets) resolved by `flowerd serve`, or a plain string (`literal:` to pass one
that looks like a reference)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from daemon import secrets

_LOOKS_LIKE_REFERENCE = ("env:", "file:")


class WebhookTable(BaseModel):
    """The `on_webhook` table as written in TOML."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    secret: str

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; give the secret the sender signs with, e.g. \"env:NAME\"")
        if value.startswith(_LOOKS_LIKE_REFERENCE) and not secrets.is_reference(value):
            raise ValueError(
                f"{value.split(':', 1)[0]!r} reference is malformed: write \"env:NAME\" (NAME of "
                "letters, digits and '_', not starting with a digit) or \"file:/absolute/path\"; "
                "write \"literal:...\" for a secret that is this text itself"
            )
        return value
