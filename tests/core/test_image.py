import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from fbmr.core import decode
from fbmr.core.contract import DEFAULT_MAX_PIXELS
from fbmr.core.decode import ImageDecodeError, PixelBudget, decode_image
from fbmr.core.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSpec,
    image_pixels,
    pad_to_square,
    preprocess_image,
    square_photo,
)
from tests.helpers import encode


def _two_tone(width: int = 40, height: int = 20) -> Image.Image:
    """Red left half, blue right half: orientation and padding are visible in the pixels."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def test_png_bytes_under_a_jpg_name_decode(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(_two_tone(), "PNG"))
    image = decode_image(path)
    assert image.mode == "RGB" and image.size == (40, 20)
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels must be turned 90 degrees clockwise to be upright
    data = encode(_two_tone(40, 20), "JPEG", exif=exif, quality=95)
    image = decode_image(data)
    assert image.size == (20, 40)
    # Red (the stored left half) ends up on top after the clockwise turn.
    top, bottom = image.getpixel((10, 2)), image.getpixel((10, 37))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_transparency_is_flattened_onto_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 20],
    ids=["empty", "text", "png-header-only"],
)
def test_non_images_raise_a_clear_error(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_truncated_jpeg_raises():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageDecodeError, match=r"truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def test_pixel_limit_refuses_before_decoding():
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(encode(_two_tone(), "PNG"), max_pixels=799)
    assert decode_image(encode(_two_tone(), "PNG"), max_pixels=800).size == (40, 20)
    # A 9000x9000 flat PNG is a few kB on disk but 81 MP once decoded.
    bomb = encode(Image.new("L", (9000, 9000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(bomb)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (encode(Image.new("RGB", (8, 8)), "TIFF"), "TIFF"),
    ],
    ids=["heic", "svg", "pdf", "tiff"],
)
def test_unsupported_formats_are_named_with_the_accepted_ones(data, name):
    # TIFF is one Pillow reads, yet not one photos are uploaded in: its decoder is never run
    with pytest.raises(ImageDecodeError, match=f"{name}.* not a supported .*JPEG, PNG, WebP"):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_accepted_formats_decode(fmt):
    image = decode_image(encode(Image.new("RGB", (8, 6), (250, 0, 0)), fmt))
    assert image.size == (8, 6) and image.getpixel((4, 3))[0] > 200


def test_16_bit_greyscale_keeps_its_tones():
    # Pillow's own conversion clips 16-bit values at 255: mid-grey would come out white
    grey = decode_image(encode(Image.new("I;16", (8, 8), 32768), "PNG"))
    assert grey.getpixel((0, 0)) == (128, 128, 128)


def test_a_long_strip_is_served_without_a_huge_canvas():
    # padded to a square first, 2,000,000 x 1 pixels would be a canvas of 4e12 pixels
    strip = encode(Image.new("RGB", (2_000_000, 1), (250, 0, 0)), "PNG")
    spec = ImageSpec.for_image_size(32)
    pixels = image_pixels(strip, spec, max_pixels=4_000_000)
    red_rows = np.flatnonzero((pixels[0] > 200).all(axis=1))
    assert pixels.shape == (3, 32, 32) and red_rows.tolist() == [16]  # one line across the middle
    wide = image_pixels(encode(Image.new("RGB", (3000, 300), (250, 0, 0)), "PNG"), spec, 4_000_000)
    assert wide[0, 16, 16] > 200 and wide[0, 0, 16] == 0  # a red band on black


def test_a_spec_crops_imagenets_share_or_keeps_the_whole_photo():
    assert ImageSpec.for_image_size(224) == ImageSpec(224, 256)
    whole = ImageSpec.for_image_size(256, crop=1.0)
    assert (whole.image_size, whole.resize_size) == (256, 256)
    # nothing cropped: a photo's border reaches the model's input
    framed = Image.new("RGB", (256, 256), (250, 0, 0))
    framed.paste((0, 0, 250), (4, 4, 252, 252))
    edge = image_pixels(encode(framed, "PNG"), whole)[:, 0, 128]
    centre_crop = image_pixels(encode(framed, "PNG"), ImageSpec.for_image_size(224))[:, 0, 112]
    assert edge[0] > 200 and centre_crop[2] > 200


def test_pad_to_square_centres_on_black():
    square = pad_to_square(_two_tone(40, 20))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (0, 0, 0)  # padding above
    assert square.getpixel((0, 10)) == (255, 0, 0)  # content starts at row 10
    assert square.getpixel((39, 29)) == (0, 0, 255)
    assert square.getpixel((39, 30)) == (0, 0, 0)  # padding below


def test_square_photo_has_the_requested_size():
    assert square_photo(encode(_two_tone(300, 100), "PNG"), 64).size == (64, 64)
    with pytest.raises(ValueError):
        square_photo(encode(_two_tone(), "PNG"), 0)


def test_preprocess_shape_dtype_and_normalisation():
    spec = ImageSpec(image_size=32, resize_size=40)
    white = encode(Image.new("RGB", (50, 50), (255, 255, 255)), "PNG")
    array = preprocess_image(white, spec)
    assert array.shape == (3, 32, 32) and array.dtype == np.float32
    expected = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(array[:, 16, 16], expected, rtol=1e-6)


def test_preprocess_centre_crops_a_padded_photo():
    # A wide photo is padded above and below; after the crop the middle row is content, the top
    # row still padding.
    spec = ImageSpec(image_size=40, resize_size=48)
    array = preprocess_image(encode(_two_tone(96, 32), "PNG"), spec)
    black = -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(array[:, 0, 20], black, rtol=1e-5)
    assert array[0, 20, 2] > 2.0  # red channel, left half


def test_image_spec_validation_and_round_trip():
    with pytest.raises(ValueError):
        ImageSpec(image_size=224, resize_size=200)
    spec = ImageSpec(image_size=96, resize_size=110)
    assert ImageSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.realdata
def test_every_raw_seller_photo_decodes(real_data):
    raw = sorted((real_data / "raw_images").glob("*.jpg"))
    assert len(raw) >= 10
    formats = set()
    for path in raw:
        with Image.open(path) as probe:
            formats.add(probe.format)
        image = decode_image(path)
        assert image.mode == "RGB"
        assert preprocess_image(path).shape == (3, 224, 224)
    assert formats >= {"JPEG", "PNG"}, "the sample has PNG files under .jpg names"


def test_a_large_jpeg_decodes_at_a_reduced_scale_that_still_covers_the_resize():
    spec = ImageSpec()
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((2048, 1536), Image.Resampling.BICUBIC)
    jpeg, png = encode(photo, "JPEG", quality=95), encode(photo, "PNG")
    opened = decode.opened(jpeg, DEFAULT_MAX_PIXELS)
    decode.draft(opened, spec.resize_size)
    assert opened.size == (256, 192)  # 1/8: its longer side still covers the resize (256)
    untouched = decode.opened(png, DEFAULT_MAX_PIXELS)
    decode.draft(untouched, spec.resize_size)
    assert untouched.size == (2048, 1536)
    # the model's input barely moves: within a grey level on average
    drafted = image_pixels(jpeg, spec).astype(int)
    full = image_pixels(png, spec).astype(int)
    assert np.abs(drafted - full).mean() < 2.0


def test_the_pixel_budget_bounds_what_decodes_at_once():
    budget = PixelBudget(100)
    inside, most = 0, 0
    lock = threading.Lock()

    def work(pixels: int) -> None:
        nonlocal inside, most
        held = min(pixels, budget.limit)  # one over the budget holds all of it
        with budget.hold(pixels):
            with lock:
                inside += held
                most = max(most, inside)
            time.sleep(0.02)  # the stimulus: a decode holding its pixels a while
            with lock:
                inside -= held

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, [40, 40, 40, 30, 30, 500, 10, 10]))  # 500: over the budget, alone
    assert most <= 100 and budget.held == 0
    with pytest.raises(ValueError):
        PixelBudget(0)
