"""SIGHUP reload shared by `serve` and `worker`: re-read the config file, apply it, or keep the old one."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gliclass_core.config import AppConfig, load_config

log = logging.getLogger("gliclass.reload")


def reload_config(path: str | None, apply: Callable[[AppConfig], object]) -> bool:
    """Load the config at `path` and hand it to `apply`; True when applied.

    `apply` must validate everything before changing anything (raise to refuse). A config that
    fails to load or to apply is logged as an error naming the problem, and the running config
    stays in use: a typo in the file never takes a running process down.
    """
    try:
        apply(load_config(path))
    except Exception as exc:
        log.error("reload failed, keeping the running config: %s", exc)
        return False
    return True
