"""The signup system's messages, step contracts and saga."""
