"""The models: the image model (a pretrained trunk from fbmr.training.trunks, a projection and a
head), the text model (a bag of hashed n-grams, optionally
beside a CNN over word2vec, and optionally an ensemble of such encoders with a pretrained
sentence encoder among them), and the fusion head over both.

Each classifier is an encoder (input -> embedding) followed by a head (embedding -> logits), so
export can serve the encoders and the heads as separate ONNX models chained in Triton, and the
similar-listing index can use the embeddings.

Its parts, behind this module: `_head` (the classifier head), `_image`, `_ngrams` (the n-gram
bag), `_text` (the text encoders, the ensemble and its head), `_fusion`.
"""

from fbmr.training.models._fusion import FusionHead, FusionModel
from fbmr.training.models._head import ClassifierHead
from fbmr.training.models._image import ImageEncoder, ImageModel
from fbmr.training.models._ngrams import VIEWS, NgramBag
from fbmr.training.models._text import EnsembleHead, TextEncoder, TextEnsembleEncoder, TextModel

__all__ = [
    "VIEWS",
    "ClassifierHead",
    "EnsembleHead",
    "FusionHead",
    "FusionModel",
    "ImageEncoder",
    "ImageModel",
    "NgramBag",
    "TextEncoder",
    "TextEnsembleEncoder",
    "TextModel",
]
