"""The serving contract: every name and default that export writes, Triton serves, and the facade,
the client and the benchmarks call. It is defined here once and imported everywhere, so renaming an
ensemble or a tensor is a change to this file, and a test (or a type checker) finds every caller.

Three kinds of query, each answered by one Triton ensemble:

    kind      ensemble             inputs               outputs
    image     image_classifier     image                probabilities, image_embedding
    text      text_classifier      token_ids            probabilities, text_embedding
    combined  product_classifier   image, token_ids     probabilities, combined_embedding

Inputs carry a leading batch axis. `image` is uint8 RGB pixels, NCHW (`image_pixels` in
`fbmr.core.image`): the ONNX image encoder normalises them itself, so a request carries one byte
per value rather than four. `token_ids` is int64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Kind(StrEnum):
    """Which embedding a query lives in: the photo's, the text's, or both combined."""

    image = "image"
    text = "text"
    combined = "combined"


def kind_of(has_photo: bool, has_text: bool) -> Kind:
    """The kind of a query: combined with both, else that of the one it has."""
    if has_photo and has_text:
        return Kind.combined
    return Kind.image if has_photo else Kind.text


# -- tensors -------------------------------------------------------------------------------

IMAGE = "image"
TOKEN_IDS = "token_ids"
LOGITS = "logits"
PROBABILITIES = "probabilities"
IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
COMBINED_EMBEDDING = "combined_embedding"


class Datatype(StrEnum):
    """A tensor's data type, as Triton's protocol (and tritonclient's `InferInput`) spells it;
    `config` is the model configuration's spelling and `numpy` numpy's, so that each is written
    once (numpy itself is not imported: `fbmr --help` reads this module)."""

    UINT8 = "UINT8"
    INT64 = "INT64"
    FP32 = "FP32"

    @property
    def config(self) -> str:
        """As config.pbtxt spells it (`data_type: TYPE_FP32`)."""
        return f"TYPE_{self.value}"

    @property
    def numpy(self) -> str:
        """numpy's name of the dtype (`np.dtype(d.numpy)`)."""
        return _NUMPY_NAMES[self]

    @classmethod
    def of_numpy(cls, name: str) -> Datatype:
        """The data type of a numpy dtype, by name (`array.dtype.name`)."""
        return next(d for d in cls if _NUMPY_NAMES[d] == name)

    @classmethod
    def of_config(cls, name: str) -> Datatype:
        """The data type of a model configuration's spelling (`TYPE_FP32`)."""
        return cls(name.removeprefix("TYPE_"))


_NUMPY_NAMES = {Datatype.UINT8: "uint8", Datatype.INT64: "int64", Datatype.FP32: "float32"}

# The ensembles' inputs; every output is FP32.
INPUT_DATATYPES = {IMAGE: Datatype.UINT8, TOKEN_IDS: Datatype.INT64}


@dataclass(frozen=True)
class Ensemble:
    """One Triton ensemble: its name, the inputs it takes and the embedding it returns."""

    name: str
    inputs: tuple[str, ...]
    embedding: str

    @property
    def outputs(self) -> tuple[str, str]:
        return (PROBABILITIES, self.embedding)


ENSEMBLES: dict[Kind, Ensemble] = {
    Kind.image: Ensemble("image_classifier", (IMAGE,), IMAGE_EMBEDDING),
    Kind.text: Ensemble("text_classifier", (TOKEN_IDS,), TEXT_EMBEDDING),
    Kind.combined: Ensemble("product_classifier", (IMAGE, TOKEN_IDS), COMBINED_EMBEDDING),
}
ENSEMBLE_NAMES = tuple(e.name for e in ENSEMBLES.values())
# The ensemble whose version directories carry the exported artifacts (tokeniser, labels, image
# settings); every ensemble gets a copy, this one is where readers look.
ARTIFACTS_ENSEMBLE = ENSEMBLES[Kind.combined].name

# -- composing models (what the ensembles chain) -------------------------------------------

IMAGE_ENCODER = "image_encoder"
IMAGE_HEAD = "image_head"
TEXT_ENCODER = "text_encoder"
TEXT_HEAD = "text_head"
FUSION_HEAD = "fusion_head"
# only when `--unfreeze-text` changed the text encoder during fusion training
FUSION_TEXT_ENCODER = "fusion_text_encoder"

# -- where things listen, by default -------------------------------------------------------

# The facade's routes, for the facade, the client and the load tests.
PREDICT_IMAGE_PATH = "/v1/predict/image"
PREDICT_TEXT_PATH = "/v1/predict/text"
PREDICT_COMBINED_PATH = "/v1/predict/combined"
PREDICT_PATHS = {
    Kind.image: PREDICT_IMAGE_PATH,
    Kind.text: PREDICT_TEXT_PATH,
    Kind.combined: PREDICT_COMBINED_PATH,
}
EMBED_PATH = "/v1/embed"
SIMILAR_PATH = "/v1/similar"
LISTING_PATH = "/v1/listings/{listing_id}"  # PUT adds or replaces, DELETE removes (live index)
RELOAD_INDEX_PATH = "/v1/admin/reload-index"
# reports and pins the served model version
MODEL_VERSION_PATH = "/v1/admin/model-version"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"

LOCALHOST = "127.0.0.1"
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
FACADE_PORT = 8080
DEFAULT_TRITON_URL = f"{LOCALHOST}:{TRITON_GRPC_PORT}"
DEFAULT_FACADE_URL = f"http://{LOCALHOST}:{FACADE_PORT}"
DEFAULT_MODEL_REPOSITORY = Path("model_repository")

# The facade's settings are read from FBMR_* environment variables (FacadeSettings); its bearer
# token from API_KEY_ENV, by the facade, the CLI and the client.
ENV_PREFIX = "FBMR_"
API_KEY_ENV = f"{ENV_PREFIX}API_KEY"

# Triton's administrative protocols, answered only to requests carrying this header with the
# key Triton was started with (`fbmr.serving.triton.admin`); the key is read from the variable.
TRITON_ADMIN_HEADER = "fbmr-triton-admin-key"
TRITON_ADMIN_KEY_ENV = f"{ENV_PREFIX}TRITON_ADMIN_KEY"
TRITON_RESTRICTED_PROTOCOLS = ("model-repository", "shared-memory", "trace", "logging")

# gRPC channel options of every Triton client (the facade's, batch scoring's).
TRITON_CHANNEL_ARGS = [
    # tritonclient's defaults: no message size limit (a batch of photos is large)
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # Reconnect within a second once Triton is back, instead of gRPC's default backoff of up to
    # two minutes, so a caller recovers by itself soon after a Triton restart.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# -- listing ids ---------------------------------------------------------------------------

# A listing id: 1 to 200 ASCII letters, digits and `. _ : -`, starting with a letter or a digit
# (UUIDs, SKUs, `shop:123`). The id travels in a URL path segment, into Milvus expressions and
# into logs, so it may hold no slash, no quote, no bracket, no white space or control character,
# and it cannot be a dot segment (`..`) that a URL would resolve away. The facade, the client and
# the CLI check it by this one rule; the Milvus engine still escapes every value it sends.
LISTING_ID_MAX_CHARS = 200
_LISTING_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{LISTING_ID_MAX_CHARS - 1}}}")
LISTING_ID_PATTERN = f"^{_LISTING_ID.pattern}$"  # as OpenAPI writes it
LISTING_ID_RULE = (
    f"1 to {LISTING_ID_MAX_CHARS} characters of A-Z, a-z, 0-9 and . _ : -, "
    "starting with a letter or a digit"
)


def listing_id_problem(listing_id: object) -> str | None:
    """Why `listing_id` is not a valid listing id (a sentence), or None when it is."""
    if not isinstance(listing_id, str):
        return f"listing id: must be a string, got {type(listing_id).__name__}"
    # fullmatch: Python's `$` also matches before a trailing newline
    if _LISTING_ID.fullmatch(listing_id) is None:
        shown = listing_id if len(listing_id) <= 40 else listing_id[:40] + "..."
        return f"listing id {shown!r}: must be {LISTING_ID_RULE}"
    return None


# -- limits --------------------------------------------------------------------------------

# Upright photos from phones are at most ~50 MP; anything far larger is a decompression bomb.
DEFAULT_MAX_PIXELS = 64_000_000
# Most listing ids one similar-listing query may leave out (`exclude_id`): a page of results'
# worth, so a query's cost stays bounded whatever it sends.
MAX_EXCLUDE_IDS = 100
# A listing's stored fields, which every similar-listing answer echoes: a marketplace title is
# at most 150 characters in the real sample (with its `| in Town | Gumtree` suffix) and a
# location 41, so these leave room and bound what one listing can make the index hold.
MAX_LISTING_NAME_CHARS = 300
MAX_LOCATION_CHARS = 200
# Most photos one request or listing may carry (repeated `photo` parts, pooled by
# `fbmr.core.pooling`): each costs an image-model pass, so this bounds one request's cost; a
# listing of the real sample has one or two.
MAX_PHOTOS = 8

# -- errors --------------------------------------------------------------------------------


class ErrorCode(StrEnum):
    """Why a request failed, as every error answer of the facade names it in `code` and batch
    scoring records it per row. Codes are stable; the `error` message beside them is for people
    and may be reworded, so nothing should be decided by its wording."""

    # the request: fix it and send it again
    invalid_input = "invalid_input"  # a field missing, of the wrong type or out of range
    unsupported_media_type = "unsupported_media_type"  # a body the endpoint cannot read
    no_input = "no_input"  # neither a photo nor a text
    photo_missing = "photo_missing"  # an image query without a photo (batch scoring)
    photo_empty = "photo_empty"
    photo_unreadable = "photo_unreadable"  # not an image, or a corrupt one
    photo_too_large = "photo_too_large"  # over the byte or the pixel limit
    too_many_photos = "too_many_photos"  # more `photo` parts than MAX_PHOTOS
    text_empty = "text_empty"
    text_too_long = "text_too_long"
    too_large = "too_large"  # the whole body, or a form field, over the byte limit
    body_timeout = "body_timeout"  # the body stopped arriving
    unauthorised = "unauthorised"  # the API key is missing or wrong
    forbidden = "forbidden"  # a valid API key whose scope does not cover the route
    not_found = "not_found"  # no such route
    listing_not_found = "listing_not_found"  # a DELETE of a listing the index does not hold
    listing_id_invalid = "listing_id_invalid"  # not a listing id (LISTING_ID_RULE)
    method_not_allowed = "method_not_allowed"
    no_index = "no_index"  # the facade was started without a similar-listing index
    version_not_exported = "version_not_exported"  # a pin of a version the repository lacks
    version_refused = "version_refused"  # a pin of a version the rollout refused
    # the service: come back later (503, with Retry-After)
    overloaded = "overloaded"
    model_unavailable = "model_unavailable"  # Triton away, or not serving the version yet
    index_unavailable = "index_unavailable"  # no similar-listing index loaded (yet)
    # the facade itself: its log has the details
    internal = "internal"
