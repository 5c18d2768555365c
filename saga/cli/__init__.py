"""The ``saga`` command line.

::

    saga dev up [--dir .saga]    start the embedded broker and PostgreSQL, print settings
    saga dev status              show whether they run, and where
    saga dev down                stop both, by the pids ``up`` recorded
    saga run pkg.module          run the step service ``service`` of ``pkg.module``
    saga coordinator             run the coordinator of SAGA_DEFINITIONS
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from saga.errors import SagaError

DEFAULT_DEV_DIR = Path(".saga")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except SagaError as exc:
        print(f"saga: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        print(f"saga: error: {settings_errors(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def settings_errors(exc: ValidationError) -> str:
    """What is wrong with the ``SAGA_*`` settings, in one line (never their values)."""
    found = []
    for error in exc.errors(include_input=False, include_url=False):
        names = [str(part) for part in error["loc"]]
        where = f"SAGA_{'_'.join(names).upper()}: " if names else ""
        text = " ".join(error["msg"].split()).removeprefix("Value error, ")
        found.append(where + text)
    return "invalid settings: " + "; ".join(found)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saga", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="the embedded development stack")
    dev_commands = dev.add_subparsers(required=True, metavar="ACTION")
    for name, run, text in (
        ("up", _dev_up, "start broker and PostgreSQL, print the settings to export"),
        ("status", _dev_status, "show whether the stack runs"),
        ("down", _dev_down, "stop broker and PostgreSQL"),
    ):
        sub = dev_commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, default=DEFAULT_DEV_DIR, help="data directory")
        if name == "up":
            taken = "taken or 0: any free port"
            sub.add_argument("--kafka-port", type=int, default=9092, help=f"preferred ({taken})")
            sub.add_argument("--postgres-port", type=int, default=5432, help=f"preferred ({taken})")
        sub.set_defaults(run=run)

    service = commands.add_parser("run", help="run a step service, e.g. `saga run myapp.payment`")
    service.add_argument("module", help="module with a `service = Service(...)` attribute")
    service.set_defaults(run=_run)

    from saga.cli import operator as operator_cli
    from saga.cli import tasks as tasks_cli

    operator_cli.register(commands)
    tasks_cli.register(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    from saga.errors import import_named
    from saga.participant.service import Service

    module = import_named(args.module, "saga run")
    service = getattr(module, "service", None)
    if not isinstance(service, Service):
        print(f"saga: error: {args.module} has no `service = Service(...)`", file=sys.stderr)
        return 2
    from saga.participant.runtime import run_service

    return run_service(service)


def _dev_up(args: argparse.Namespace) -> int:
    from saga.dev import DevStack

    info = DevStack(args.dir).up(kafka_port=args.kafka_port, postgres_port=args.postgres_port)
    print(f"# broker   pid {info.broker.pid}  {info.bootstrap_servers}  log {info.broker.log}")
    print(f"# postgres pid {info.postgres.pid}  {info.database_url}  log {info.postgres.log}")
    print("# to use this stack:")
    for name, value in info.environment().items():
        print(f"export {name}={value}")
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from saga.dev import DevStack

    info = DevStack(args.dir).status()
    if info is None:
        print("dev stack: down")
        return 3
    print("dev stack: up")
    print(f"broker   pid {info.broker.pid}  {info.bootstrap_servers}")
    print(f"postgres pid {info.postgres.pid}  {info.database_url}")
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from saga.dev import DevStack

    stopped = DevStack(args.dir).down()
    print("stopped " + ", ".join(stopped) if stopped else "dev stack was not running")
    return 0
