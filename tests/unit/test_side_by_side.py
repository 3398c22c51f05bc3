"""``bench/side_by_side.py`` reads two benches' output as the same lines with different
figures: what it pairs, and how it prints a pair."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def test_side_by_side_pairs_each_printed_figure_with_its_medians_and_spread() -> None:
    """The comparison's reading of bench output: padding and verdicts do not split a line
    from its partner, repeated lines are told apart by order, per-run lines are left out."""
    spec = importlib.util.spec_from_file_location("side_by_side", ROOT / "bench" /
                                                  "side_by_side.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def output(rate: str, verdict: str) -> str:
        return (f"run 1: ours {rate}/s\nS=4 ratio: 1.0\nS=100 ratio: 2.0\n"
                f"ours  {rate} deliveries/s  {verdict} (target >= 50,000)\n")

    old = [module._figures(output(r, "PASS")) for r in ("40,000", "50,000", "60,000")]
    new = [module._figures(output(r, "FAIL")) for r in ("20,000", "30,000", "45,000")]
    template = "ours # deliveries/s PASS/FAIL (target >= #)"
    assert set(old[0]) == set(new[0]) == {"run #: ours #/s", "S=# ratio: #",
                                          "S=# ratio: # (2nd)", template}
    row = module._row(template, [f[template] for f in old], [f[template] for f in new])
    assert row == ("ours [50,000 -> 30,000] deliveries/s PASS/FAIL (target >= 50,000)"
                   "  new/old 0.600  spread old 1.50x new 2.25x")
