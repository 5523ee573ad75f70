"""The message service handler shell: settings, receiving decisions, the aiohttp server and its workers."""
