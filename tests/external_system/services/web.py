"""Start signups from the command line: ``python -m services.web ACCOUNT EMAIL PLAN``.

What a web front end would do: publish ``web.SignupRequested`` (the saga id is
the account id) with the ``SAGA_*`` settings of the environment.
"""

import asyncio
import sys

from saga import Envelope, Publisher, Settings, events_topic, prefixed

from contracts.web import SignupRequested


async def signup(account_id: str, email: str, plan: str) -> None:
    settings = Settings()
    envelope = Envelope(
        payload=SignupRequested(account_id=account_id, email=email, plan=plan),
        saga_id=account_id,
        saga_type="signup",
        source="/web",
    )
    async with Publisher(settings) as publisher:
        await publisher.publish(prefixed(settings.topic_prefix, events_topic("web")), envelope)


if __name__ == "__main__":
    asyncio.run(signup(*sys.argv[1:4]))
