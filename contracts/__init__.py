"""The example order system's messages and saga definitions: a user of the library.

Each module holds one service's messages and step contracts; ``order_saga``
holds the saga they make up; ``catalog`` names the definitions the coordinator
loads (``SAGA_DEFINITIONS=contracts.catalog:saga_definitions``).
"""
