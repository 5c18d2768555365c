"""The signup system's services, each run with ``saga run services.<name>``."""
