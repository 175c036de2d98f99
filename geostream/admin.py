"""``geostream admin ...``: credentials for devices, dispatchers and analysts.

Each part that issues credentials lists a module in :data:`ADMIN_MODULES` with
``register_admin(actions)``, adding its own ``admin`` sub-commands.
"""

from __future__ import annotations

import importlib
from typing import Any

ADMIN_MODULES: tuple[str, ...] = ("ingest.commands", "sinks.commands", "sinks.api.commands")


def register(commands: Any) -> None:
    admin = commands.add_parser("admin", help="device, dispatcher and analyst credentials")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name in ADMIN_MODULES:
        importlib.import_module(name).register_admin(actions)
