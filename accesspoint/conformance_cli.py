"""``accesspoint conformance serve``: the conformance test service for an EC-style test bed (off unless started).

Exit codes: 0 stopped; 2 the settings do not validate; 64 usage.
"""

from __future__ import annotations

import argparse
from typing import Any

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, failure


def register(commands: Any) -> None:
    """Add ``conformance serve`` to the CLI."""
    conformance = commands.add_parser("conformance", help="the EC conformance test service (test beds only)")
    actions = conformance.add_subparsers(dest="conformance_command", required=True)
    serve = actions.add_parser("serve", help="take Submit, send Deliver and Notify, for one access point")
    serve.add_argument("--config", required=True, help="the settings file (accesspoint/conformance/settings.py)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Validate the settings, then serve until interrupted."""
    from accesspoint.conformance.service import run_service
    from accesspoint.conformance.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        return EXIT_MALFORMED, failure("invalid-config", str(exc))
    run_service(settings)
    return EXIT_OK, {"ok": True, "stopped": True}
