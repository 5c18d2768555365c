"""The saga console: sagas, tasks and dead letters in the browser (``saga console``).

Modules by data flow: :mod:`~saga.console.queries` (sagas and tasks read from the
coordinator's database, shaped by pure functions), :mod:`~saga.console.dead_letters`
(dead letters read from the broker, and redriven to their topic),
:mod:`~saga.console.operations` (actions, single and bulk, through the coordinator's
own logic, audited), :mod:`~saga.console.pages` (HTML) and :mod:`~saga.console.app`
(the Starlette application: sign-in, roles, routes).
"""
