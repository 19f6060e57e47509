"""The smallest pipeline: a greeting for a name. Runs under either driver.

    flowerd run hello_world --input name=Berlin
"""

import logging

logger = logging.getLogger(__name__)


def greeting(salutation: str = "Hello") -> str:
    """The word to greet with; `pipeline_setup` supplies a `salutation` node."""
    return salutation


def full_greeting(greeting: str, name: str = "World") -> str:
    """What the pipeline is for."""
    logger.debug("greeting %s", name)
    return f"{greeting}, {name}!"
