"""`python -m services.notifier.subscribers create NAME`: a RabbitMQ user for an external system.

The user may declare, bind and read queues named ``sub.NAME.*`` and read ``boreas.events``
(which is what binding a queue to it takes), and nothing else: it cannot publish to
``boreas.events`` (no write permission on it) nor read Boreas' internal queues. Uses
``rabbitmqctl`` on the broker's host (BOREAS_RABBITMQCTL to run it another way, e.g. through
``docker exec``). Prints the credentials once.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from shared.config import DEFAULT_AMQP_URL
from shared.events import EXCHANGE

NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}$")


@dataclass(frozen=True)
class Subscriber:
    name: str
    username: str
    password: str
    vhost: str
    queue_prefix: str

    def amqp_url(self, host: str, port: int) -> str:
        return (
            f"amqp://{quote(self.username)}:{quote(self.password)}@{host}:{port}/"
            f"{quote(self.vhost, safe='')}"
        )


def permissions(name: str) -> tuple[str, str, str]:
    """(configure, write, read) regular expressions for subscriber ``name``."""
    own = rf"^sub\.{re.escape(name)}\..*"
    return own, own, rf"^({re.escape(EXCHANGE)}|sub\.{re.escape(name)}\..*)$"


def new_password() -> str:
    """192 random bits in hex: rabbitmqctl takes an argument that starts with '-' (as one in
    64 URL-safe tokens does) for an option, and refuses the command."""
    return secrets.token_hex(24)


def create(name: str, vhost: str, rabbitmqctl: list[str]) -> Subscriber:
    if not NAME.match(name):
        raise ValueError("a subscriber name is 2-31 characters: a-z, 0-9 and '-'")
    subscriber = Subscriber(name, f"sub-{name}", new_password(), vhost, f"sub.{name}.")

    def run(*args: str) -> None:
        done = subprocess.run([*rabbitmqctl, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()}")

    run("add_user", subscriber.username, subscriber.password)
    run("set_permissions", "-p", vhost, subscriber.username, *permissions(name))
    return subscriber


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", choices=["create"])
    parser.add_argument("name")
    args = parser.parse_args()
    url = urlsplit(os.environ.get("BOREAS_AMQP_URL", DEFAULT_AMQP_URL))
    vhost = url.path[1:] or "/"
    rabbitmqctl = shlex.split(os.environ.get("BOREAS_RABBITMQCTL", "rabbitmqctl"))
    try:
        subscriber = create(args.name, vhost, rabbitmqctl)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"user:          {subscriber.username}")
    print(f"password:      {subscriber.password}   (shown once)")
    print(f"url:           {subscriber.amqp_url(url.hostname or '127.0.0.1', url.port or 5672)}")
    print(f"exchange:      {EXCHANGE} (topic; bind with instance.#, quota.#, #)")
    print(f"your queues:   {subscriber.queue_prefix}<anything>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
