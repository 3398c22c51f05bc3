"""The threaded mode: producer, senders and monitor on real threads under one supervisor.

The sender pool and the supervisor are also the durable worker's (``dispatch.worker``)."""

__all__: list[str] = []
