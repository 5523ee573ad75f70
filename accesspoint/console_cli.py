"""``accesspoint console-user``: create a console user or reset one's password and role, from the machine itself
(the first admin cannot come from the console). The password is read from stdin, never from the arguments, which
other users of the machine may see.

Exit codes: 0 done; 2 bad input (a settings file that does not validate, a weak password or bad user name); 64 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, UsageError, failure


def register(commands: Any) -> None:
    """Add ``console-user``."""
    user = commands.add_parser("console-user", help="create a console user or reset its password and role")
    user.add_argument("name")
    user.add_argument("--role", choices=["viewer", "admin"], required=True)
    user.add_argument("--console", required=True, help="the console settings file")
    user.add_argument(
        "--config", help="the access point's settings file (where the console's database is, unless it names one)"
    )
    user.set_defaults(handler=cmd_user)


def cmd_user(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Read the password (one line) from stdin and set the user."""
    from accesspoint.console.accounts import Role
    from accesspoint.console.serve import set_user
    from accesspoint.console.settings import load_settings
    from accesspoint.msh.config import ConfigError, load_config
    from accesspoint.servicekit.settings import SettingsError

    try:
        settings = load_settings(Path(args.console))
        if settings.database is None and not args.config:
            raise UsageError("--config is needed: the console's database is beside the access point's store")
        storage = load_config(args.config).storage if settings.database is None else Path()
    except (ConfigError, SettingsError) as exc:
        return EXIT_MALFORMED, failure("invalid-config", str(exc))
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        user = asyncio.run(set_user(settings, storage, args.name, password, Role(args.role)))
    except ValueError as exc:
        return EXIT_MALFORMED, failure("invalid-user", str(exc))
    return EXIT_OK, {"ok": True, "user": user.name, "role": user.role.value}
