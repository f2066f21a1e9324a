"""The tier's stand-in for MongoDB: mongoeco (PyPI) serving the MongoDB wire protocol.

A green tier run therefore means "consistent with mongoeco", not "works on MongoDB". The data is in
mongoeco's SQLite engine in ``--db`` (default ``/data/db/mongoeco.sqlite3``, the official image's data
volume), so a restarted container keeps it; ``--db ''`` keeps it in memory instead. With
``MONGO_INITDB_ROOT_USERNAME`` and ``MONGO_INITDB_ROOT_PASSWORD`` (the variables the official mongo
image reads) every command but the handshake needs a SCRAM sign-in as that user, whose
authentication database is ``admin``, as for the official image's root user.
mongoeco's handshake does not offer SCRAM-SHA-256 on its own (PyMongo then falls back to SCRAM-SHA-1,
which mongoeco gets wrong), so clients name ``authMechanism=SCRAM-SHA-256``, which MongoDB accepts too.
Usage: python3.13 mongoeco_server.py [--host 0.0.0.0] [--port 27017] [--db FILE] [--ping]   (--ping: the healthcheck)
"""

import argparse
import asyncio
import os
import signal

from mongoeco.engines.memory import MemoryEngine
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.wire import AsyncMongoEcoProxyServer
from mongoeco.wire.auth import WireAuthUser


def users() -> tuple[WireAuthUser, ...]:
    name, password = os.environ.get("MONGO_INITDB_ROOT_USERNAME"), os.environ.get("MONGO_INITDB_ROOT_PASSWORD")
    if bool(name) != bool(password):
        raise SystemExit("set both MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD, or neither")
    return (WireAuthUser(name, password, source="admin"),) if name else ()


def ping(port: int) -> None:
    """Sign in as the root user (when there is one) and ping, as a client of the stack would."""
    from pymongo import MongoClient

    user = next(iter(users()), None)
    auth = f"{user.username}:{user.password}@" if user else ""
    url = f"mongodb://{auth}127.0.0.1:{port}/?authSource=admin&authMechanism=SCRAM-SHA-256" if user else \
        f"mongodb://127.0.0.1:{port}/"
    with MongoClient(url, serverSelectionTimeoutMS=3000) as client:
        client.admin.command("ping")


async def main(host: str, port: int, db: str) -> None:
    engine = SQLiteEngine(db) if db else MemoryEngine()
    async with AsyncMongoEcoProxyServer(engine=engine, host=host, port=port, auth_users=users()) as server:
        print("mongoeco listening on", server.address.uri, "auth:", "on" if users() else "off", flush=True)
        stop = asyncio.Event()
        # As PID 1 of its container, the process would ignore SIGTERM without a handler of its own.
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--db", default="/data/db/mongoeco.sqlite3", help="SQLite file ('': in memory)")
    parser.add_argument("--ping", action="store_true", help="check a running server answers, then exit")
    args = parser.parse_args()
    if args.ping:
        ping(args.port)
    else:
        asyncio.run(main(args.host, args.port, args.db))
