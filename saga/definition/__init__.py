"""The saga definition DSL: step contracts, saga definitions, their checks and renderings."""
