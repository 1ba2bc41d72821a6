import pytest

from fbmr.training.config import TrainConfig
from fbmr.training.stages.text import member_views


def test_members_read_the_views_in_turn():
    assert member_views(TrainConfig().text_views, 3) == ["all", "all", "all"]
    assert member_views("all,words,chars", 3) == ["all", "words", "chars"]
    assert member_views("all, words", 3) == ["all", "words", "all"]
    assert member_views("chars", 1) == ["chars"]
    for bad in ("all,bigrams", " , "):
        with pytest.raises(ValueError, match="text views must be some of"):
            member_views(bad, 2)


def test_views_other_than_all_need_the_idf_weighted_bag():
    assert member_views("all", 2, weighed=False) == ["all", "all"]
    with pytest.raises(ValueError, match="need the n-gram bag with IDF"):
        member_views("all,words", 2, weighed=False)
