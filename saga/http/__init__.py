"""The HTTP face of a saga process: Starlette on uvicorn, in the process's event loop.

* :mod:`saga.http.app`: the ASGI app: ``/healthz`` and ``/readyz`` (open), then the
  process's endpoints (a service's routes, the coordinator's ``/tasks``), each behind
  a bearer token (:mod:`saga.security.auth`) and, where it says so, a role;
* :mod:`saga.http.server`: uvicorn serving that app beside the process's consumers,
  431 for oversized headers, stopped gracefully;
* :mod:`saga.http.outbox`: starting sagas from a FastAPI or other ASGI app of your own,
  in your request's database transaction.
"""
