"""Cleaning rules, on values shaped like the real seed data's quirks."""

import math

import pytest

from fbmr.core.listing import (
    clean_field,
    clean_product_name,
    label_from_category,
    listing_text,
    model_text,
    parse_price,
)


@pytest.mark.parametrize(
    ("category", "label"),
    [
        (
            "Home & Garden / Dining, Living Room Furniture / Mirrors, Clocks & Ornaments",
            "Home & Garden",
        ),
        ("Appliances", "Appliances"),
        ("  Computers & Software / Laptops\r", "Computers & Software"),
        ("", None),
        (float("nan"), None),
        (None, None),
    ],
)
def test_label_is_first_category_segment(category, label):
    assert label_from_category(category) == label


@pytest.mark.parametrize(
    ("price", "value"),
    [("£5,000.00", 5000.0), ("£0.50", 0.5), ("£20", 20.0), (" £1,234,567.89 ", 1234567.89)],
)
def test_price_text_to_number(price, value):
    assert parse_price(price) == pytest.approx(value)


@pytest.mark.parametrize("price", ["", "free", "£", None, float("nan"), "-£5.00", "£inf"])
def test_unparseable_price_is_nan(price):
    assert math.isnan(parse_price(price))


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("Mirror wall art | in Wokingham, Berkshire | Gumtree", "Mirror wall art"),
        (
            "Philips Facial Tanning Lamp £65 0NO | in Dundee | Gumtree",
            "Philips Facial Tanning Lamp £65 0NO",
        ),
        (
            "Tripod and Selfie Stick. | in Whitechapel, London | Gumtree\r",
            "Tripod and Selfie Stick.",
        ),
        ("Xbox series x | Gumtree", "Xbox series x"),
        ("Sofa | grey | 3 seater", "Sofa | grey | 3 seater"),  # a pipe that is not the noise stays
        ("Plain title", "Plain title"),
    ],
)
def test_product_name_noise_is_stripped(name, clean):
    assert clean_product_name(name) == clean
    assert clean_product_name(clean_product_name(name)) == clean_product_name(name)


def test_bare_carriage_returns_are_folded():
    assert clean_field("Brand new\rnever used\r\n  boxed ") == "Brand new never used boxed"
    assert clean_field(float("nan")) == ""


def test_listing_text_joins_clean_name_and_description():
    text = listing_text("Kettle | in Leeds, West Yorkshire | Gumtree", "Works\rwell")
    assert text == "Kettle | Works well"  # the mark: where the name ends
    assert listing_text("", "only a description") == "only a description"
    assert listing_text(product_name="only a name") == "only a name |"


def test_model_text_of_raw_fields_is_the_text_training_reads():
    raw_name = "Sun loungers | in Skegness, Lincolnshire | Gumtree"
    raw_description = "Two loungers,\r  barely used.\rCollection only"
    # What data preparation stores (cleaned fields), read the way training reads it.
    prepared = listing_text(clean_product_name(raw_name), clean_field(raw_description))
    assert model_text(name=raw_name, description=raw_description) == prepared
    assert prepared == "Sun loungers | Two loungers, barely used. Collection only"
    assert model_text(name=raw_name) == "Sun loungers |"


def test_model_text_of_a_free_text_drops_the_marketplace_suffix():
    title = "Sun loungers | in Skegness, Lincolnshire | Gumtree"
    # The suffix marks where the name ends: the text reads as the fields would.
    assert model_text(text=title) == "Sun loungers |" == listing_text(title)
    assert model_text(text=f"{title} Two loungers\r barely used") == (
        "Sun loungers | Two loungers barely used"
    )
    assert model_text(text=f"{title} Two | Gumtree loungers") == "Sun loungers | Two loungers"
    assert model_text(text="Sofa | Gumtree") == "Sofa |"
    assert model_text(text="Gumtree bag, a|b") == "Gumtree bag, a|b"
    with pytest.raises(ValueError, match="not both"):
        model_text(name="Sofa", text="Sofa")


def test_a_listings_photos_in_a_cell_and_back():
    import numpy as np

    from fbmr.core.listing import cell_photos, photo_cell

    assert [photo_cell([]), photo_cell(["a.jpg"]), photo_cell(("a.jpg", "b.jpg"))] == [
        None, "a.jpg", ["a.jpg", "b.jpg"]
    ]  # fmt: skip
    for cell, photos in [
        (None, []), (float("nan"), []), ("", []), ("a.jpg", ["a.jpg"]),
        (["a.jpg", "", None, "b.jpg"], ["a.jpg", "b.jpg"]), (np.array(["x", "y"]), ["x", "y"]),
    ]:  # fmt: skip
        assert cell_photos(cell) == photos, cell
    assert cell_photos(photo_cell(["a", "b"])) == ["a", "b"]
