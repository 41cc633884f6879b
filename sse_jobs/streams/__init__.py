"""Event streams (contract section 4), for every channel (SSE now; WebSocket, GraphQL).

- ``broker``: in-process fan-out of committed events to open streams, bounded buffers.
- ``source``: one stream's events: the resume rules, the 204 case, the limits on open
  streams, and replay from storage followed by live events without a gap or a duplicate.
"""
