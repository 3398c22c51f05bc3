"""The virtual mode: the same senders and policies as discrete events on a simulated clock,
a million messages in about a second. ``run.simulate`` chooses the event loop."""

__all__: list[str] = []
