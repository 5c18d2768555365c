from saga import run_service
from services.inventory import service

raise SystemExit(run_service(service))
