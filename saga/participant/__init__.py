"""The step SDK: a service's handlers bound to step contracts (``service``), and how a
delivery runs (``step_runner``, ``attempts``, ``batches``) in its process (``runtime``)."""
