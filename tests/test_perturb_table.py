"""`gradaudit perturb` names the removal order as the literature does: MoRF / LeRF (issue 13)."""

from types import SimpleNamespace

from gradaudit.evaluation.tables import pixel_table as _pixel_table


def test_pixel_table_spells_lerf_and_morf():
    for order, name in (("lerf", "LeRF"), ("morf", "MoRF")):
        r = SimpleNamespace(order=order, fractions=[0.1, 0.5], counts=[78, 392], score=0.5, higher_is_better=True,
                            curve=SimpleNamespace(accuracy=[0.9, 0.5], probability=[0.8, 0.4]))
        text = _pixel_table(r)
        assert f"{name} acc" in text.splitlines()[0] and order.upper() not in text
