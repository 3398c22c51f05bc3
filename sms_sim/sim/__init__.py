"""Simulation: the same model on real threads (``threaded``) or a virtual clock (``virtual``),
and what is built on the virtual clock: the capacity planner (``plan``) and the queueing
theory it is checked against (``theory``)."""

__all__: list[str] = []
