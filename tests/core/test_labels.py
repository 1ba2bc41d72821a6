import numpy as np
import pytest

from fbmr.core.labels import LabelMap


def test_from_labels_is_sorted_and_deterministic():
    a = LabelMap.from_labels(["b", "a", "c", "a"])
    b = LabelMap.from_labels(["c", "b", "a"])
    assert a.classes == ("a", "b", "c")
    assert a == b


def test_encode_decode_round_trip():
    labels = LabelMap(["Appliances", "Home & Garden", "Other Goods"])
    for name in labels.classes:
        assert labels.decode(labels.encode(name)) == name


def test_unknown_class_error_lists_known_ones():
    labels = LabelMap(["a", "b"])
    with pytest.raises(KeyError, match="known"):
        labels.encode("z")
    with pytest.raises(IndexError):
        labels.decode(2)


@pytest.mark.parametrize("classes", [[], ["a", "a"], ["a", " "]])
def test_invalid_class_lists_are_refused(classes):
    with pytest.raises(ValueError):
        LabelMap(classes)


def test_rank_orders_by_probability():
    labels = LabelMap(["a", "b", "c"])
    ranked = labels.rank(np.array([0.2, 0.5, 0.3]))
    assert [name for name, _ in ranked] == ["b", "c", "a"]
    assert ranked[0][1] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        labels.rank([0.5, 0.5])


def test_save_load(tmp_path):
    labels = LabelMap(["Clothes, Footwear & Accessories", "Health & Beauty"])
    labels.save(tmp_path / "label_map.json")
    assert LabelMap.load(tmp_path / "label_map.json") == labels
    (tmp_path / "other.json").write_text('{"format": "other", "classes": ["a"]}')
    with pytest.raises(ValueError, match="not a label map"):
        LabelMap.load(tmp_path / "other.json")
