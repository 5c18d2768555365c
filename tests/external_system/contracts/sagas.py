"""The signup saga: open the account, charge the plan, send the welcome mail."""

from datetime import timedelta

from saga import SagaDefinition, Step

from contracts.accounts import OPEN_ACCOUNT
from contracts.mail import WELCOME
from contracts.payment import CHARGE, VoidCharges
from contracts.web import SignupRequested

SIGNUP = SagaDefinition(
    "signup",
    starts_with=SignupRequested,
    steps=[
        Step("account", OPEN_ACCOUNT, reply_timeout=timedelta(seconds=10)),
        Step("charge", CHARGE, reply_timeout=timedelta(seconds=5), on_timeout=VoidCharges),
        Step("welcome", WELCOME, irreversible=True),
    ],
)

SAGAS = [SIGNUP]
