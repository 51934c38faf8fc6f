"""An instance changing hands, in quota's arithmetic. No I/O."""

from services.quota.accounting import Amounts, Limits, refusal, transfer


def test_the_amounts_move_from_the_previous_owner_to_the_new_one() -> None:
    giver, taker = transfer(Amounts(3, 6, 6144), Amounts(1, 1, 512), Amounts(1, 2, 2048))
    assert giver == Amounts(2, 4, 4096)
    assert taker == Amounts(2, 3, 2560)


def test_the_new_owner_may_pass_a_limit_and_is_refused_more() -> None:
    _, taker = transfer(Amounts(1, 2, 2048), Amounts(1, 2, 2048), Amounts(1, 2, 2048))
    assert taker == Amounts(2, 4, 4096)
    assert refusal(taker, Limits(instances=1), Amounts(1, 1, 1)) == (
        "instances limit 1 reached: 2 in use or reserved, this launch needs 1 more"
    )


def test_a_previous_owner_whose_usage_drifted_low_stays_at_zero() -> None:
    giver, taker = transfer(Amounts(0, 1, 0), Amounts(), Amounts(1, 2, 2048))
    assert giver == Amounts(0, 0, 0)
    assert taker == Amounts(1, 2, 2048)
