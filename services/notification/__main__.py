from saga import run_service
from services.notification import service

raise SystemExit(run_service(service))
