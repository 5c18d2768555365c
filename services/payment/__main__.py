from saga import run_service
from services.payment import service

raise SystemExit(run_service(service))
