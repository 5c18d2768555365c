"""The outbox: where a delivery's inbox row and outgoing events are written (``store``),
relayed to Kafka (``relay``) and pruned (``retention``)."""
