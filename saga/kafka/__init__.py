"""Kafka transport: the publisher, the consumer loop (intake, partitions, commits,
rebalances), dead letters and topic provisioning."""
