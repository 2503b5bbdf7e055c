"""The `gateway` command: one module per command group, the same services as the API.

    server.py    serve, migrate, demo
    people.py    users, orgs, members, keys (orgs.py: their list, archive, transfer, role and remove commands)
    policy.py    policy load|lint|test|explain|diff|sync|export
    operating.py invitations, roles, service-accounts, policy versions|version|rollback|shadow
    secrets.py   bootstrap-token, signing-keys, encryption-key, outbox
    audit.py     audit export|prune|tail

Every command exits non-zero with one line on failure: 2 for bad configuration, 1 for a refused operation.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gateway.cli import audit, operating, people, policy, secrets, server
from gateway.cli.common import CommandError
from gateway.errors import GatewayError
from gateway.policy.rules import PolicyError
from gateway.preflight import StartupError
from gateway.settings import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.split("\n", 1)[0])
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", help="TOML config file (default: $GATEWAY_CONFIG, else ./gateway.toml)")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (server, people, secrets, audit):
        group.register(commands, config)
    operating.register(commands, config, policy.register(commands, config))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, GatewayError, PolicyError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
