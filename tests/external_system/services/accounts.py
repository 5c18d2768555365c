"""Open accounts in the service's own table; close them when a signup is undone."""

from saga import Service, StepContext

from contracts.accounts import OPEN_ACCOUNT, AccountClosed, AccountCreated, CloseAccount
from contracts.web import SignupRequested

SCHEMA = """CREATE TABLE IF NOT EXISTS accounts (
    account_id text PRIMARY KEY, email text NOT NULL, open boolean NOT NULL DEFAULT true
)"""
service = Service("accounts", store="postgres", schema=(SCHEMA,))


@service.step(OPEN_ACCOUNT)
async def open_account(signup: SignupRequested, ctx: StepContext) -> AccountCreated:
    await ctx.db.execute(
        "INSERT INTO accounts VALUES ($1, $2) ON CONFLICT DO NOTHING",
        signup.account_id,
        signup.email,
    )
    return AccountCreated(account_id=signup.account_id, email=signup.email, plan=signup.plan)


@service.compensation(OPEN_ACCOUNT)
async def close_account(command: CloseAccount, ctx: StepContext) -> AccountClosed:
    status = await ctx.db.execute(
        "UPDATE accounts SET open = false WHERE account_id = $1 AND open", command.account_id
    )
    return AccountClosed(account_id=command.account_id, closed=status == "UPDATE 1")
