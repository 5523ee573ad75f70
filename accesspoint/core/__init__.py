"""The sans-I/O AS4 core: pure functions over bytes and typed objects.

Nothing under ``accesspoint.core`` imports asyncio, aiohttp, SQLAlchemy or Redis (a test enforces it):
building, parsing and packaging messages is done here, and the shell around it does the I/O.
"""
