"""The exported repository's ONNX files run by plain onnxruntime sessions: the answer a listing
must get from the served stack, found without the facade's or Triton's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    COMBINED_EMBEDDING,
    FUSION_HEAD,
    FUSION_TEXT_ENCODER,
    IMAGE,
    IMAGE_EMBEDDING,
    IMAGE_ENCODER,
    IMAGE_HEAD,
    PROBABILITIES,
    TEXT_EMBEDDING,
    TEXT_ENCODER,
    TEXT_HEAD,
    TOKEN_IDS,
    Kind,
)


class OnnxReference:
    """The exported repository's ONNX files run by plain onnxruntime sessions, outside Triton and
    the facade: the answer a listing must get, found independently of the serving code."""

    def __init__(self, repository: Path, version: int = 1) -> None:
        self.artifacts = ModelArtifacts.load(repository, version=version)
        self.files = {p.parent.parent.name: p for p in repository.glob(f"*/{version}/model.onnx")}
        self.sessions: dict[str, ort.InferenceSession] = {}
        # the product classifier's own text encoder, where fusion fine-tuned one
        self.product_text = (
            FUSION_TEXT_ENCODER if FUSION_TEXT_ENCODER in self.files else TEXT_ENCODER
        )

    def run(self, name: str, output: str, **feeds: np.ndarray) -> np.ndarray:
        """`output` of ONNX model `name` for a batch of one: its row."""
        if name not in self.sessions:
            self.sessions[name] = ort.InferenceSession(str(self.files[name]))
        return self.sessions[name].run([output], feeds)[0][0]

    def width(self, name: str, output: str) -> int:
        """An output's width as the ONNX file declares it (its dimension past the batch)."""
        graph = onnx.load(str(self.files[name])).graph
        (declared,) = (o for o in graph.output if o.name == output)
        return int(declared.type.tensor_type.shape.dim[1].dim_value)

    def _image(self, photo: bytes) -> np.ndarray:
        pixels = self.artifacts.image_input(photo)[None]
        return self.run(IMAGE_ENCODER, IMAGE_EMBEDDING, **{IMAGE: pixels})[None]

    def _text(self, text: str, encoder: str) -> np.ndarray:
        token_ids = self.artifacts.text_input(text)[None]
        return self.run(encoder, TEXT_EMBEDDING, **{TOKEN_IDS: token_ids})[None]

    def embedding(self, kind: Kind, photo: bytes, text: str) -> np.ndarray:
        if kind is Kind.image:
            return self._image(photo)[0]
        if kind is Kind.text:
            return self._text(text, TEXT_ENCODER)[0]
        image, words = self._image(photo), self._text(text, self.product_text)
        feeds = {IMAGE_EMBEDDING: image, TEXT_EMBEDDING: words}
        return self.run(FUSION_HEAD, COMBINED_EMBEDDING, **feeds)

    def probabilities(self, kind: Kind, photo: bytes, text: str) -> dict[str, float]:
        """Each category's probability for one photo and/or text."""
        if kind is Kind.image:
            out = self.run(IMAGE_HEAD, PROBABILITIES, **{IMAGE_EMBEDDING: self._image(photo)})
        elif kind is Kind.text:
            words = self._text(text, TEXT_ENCODER)
            out = self.run(TEXT_HEAD, PROBABILITIES, **{TEXT_EMBEDDING: words})
        else:
            image, words = self._image(photo), self._text(text, self.product_text)
            feeds = {IMAGE_EMBEDDING: image, TEXT_EMBEDDING: words}
            out = self.run(FUSION_HEAD, PROBABILITIES, **feeds)
        return dict(zip(self.artifacts.labels.classes, out.tolist(), strict=True))
