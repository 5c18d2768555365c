from saga import run_service
from services.shipping import service

raise SystemExit(run_service(service))
