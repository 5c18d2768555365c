"""The saga coordinator: a pure decision function wrapped by a durable I/O shell."""
