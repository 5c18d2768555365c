"""``saga vault new-key|rotate|revoke``: keys and connections of the connect-token vault."""

from __future__ import annotations

import argparse
import asyncio

from saga.cli.database import connect
from saga.outbox.schema import migrate


def new_key(args: argparse.Namespace) -> int:
    from saga.security.vault import VaultKeys

    print(VaultKeys.new_key())
    return 0


def rotate_keys(args: argparse.Namespace) -> int:
    from saga.security.vault import Vault, VaultKeys

    vault = Vault(VaultKeys.from_env())

    async def run() -> tuple[int, list[str]]:
        connection = await connect()
        try:
            await migrate(connection, "vault")
            async with connection.transaction():
                return await vault.rotate(connection)
        finally:
            await connection.close()

    rotated, unreadable = asyncio.run(run())
    print(f"re-encrypted {rotated} connection(s) under key {vault.keys.current!r}")
    for handle in unreadable:
        print(f"cannot decrypt {handle} with the known keys: left as it is")
    return 1 if unreadable else 0


def revoke_connection(args: argparse.Namespace) -> int:
    from saga.security.vault import Vault, VaultKeys

    async def run() -> bool:
        connection = await connect()
        try:
            return await Vault(VaultKeys.from_env()).revoke(connection, args.handle)
        finally:
            await connection.close()

    if asyncio.run(run()):
        print(f"revoked {args.handle}")
        return 0
    print(f"no active connection {args.handle}")
    return 1
