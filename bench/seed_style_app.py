"""The seed-style server: what the seed projects ship, as the reference point of the serving
benchmarks. A FastAPI app that loads a run's PyTorch checkpoints in-process and, per request,
decodes the photo with PIL, applies torchvision transforms and runs eager PyTorch, with the
same endpoints and answers as the facade for what the load test calls.

    uv run python bench/seed_style_app.py runs/real/run --port 18090

Endpoints: POST /v1/predict/image (multipart `photo`), /v1/predict/text (JSON `{"text"}`),
/v1/predict/combined (multipart `photo` + `text`), GET /healthz. There is no similar-listing
index in the seed style: POST /v1/similar answers 501, so load tests of this server leave
SimilarUser out of the mix. Endpoints are plain `def` functions, as FastAPI's documentation
suggests for blocking work: Starlette runs them in its thread pool, several at once, each in
PyTorch with torch.set_num_threads(2) (the seed's setting on a 2-core machine); on the GPU
when there is one (--device).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel
from torchvision import transforms

from fbmr.core.contract import (
    HEALTHZ_PATH,
    PREDICT_COMBINED_PATH,
    PREDICT_IMAGE_PATH,
    PREDICT_TEXT_PATH,
    SIMILAR_PATH,
)
from fbmr.core.labels import LabelMap
from fbmr.training.trained import load_trained_models


class TextQuery(BaseModel):
    text: str


class Prediction(BaseModel):
    pred: str
    classes: list[str]
    probabilities: list[float]


class SeedModels:
    """The run's image, text and fusion models in eval mode, and what turns inputs into tensors."""

    def __init__(self, run_dir: Path, device: torch.device) -> None:
        # the loader training and export use, so every fusion the training can produce loads
        trained = load_trained_models(run_dir, device)
        if trained.fusion is None:
            raise FileNotFoundError(f"{run_dir} has no trained fusion stage")
        self.labels = LabelMap(trained.classes)
        self.image, self.text, self.fusion = trained.image, trained.text, trained.fusion
        self.device = device
        spec = trained.image_spec
        self.transform = transforms.Compose(
            [
                transforms.Resize(spec.resize_size),
                transforms.CenterCrop(spec.image_size),
                transforms.ToTensor(),
                transforms.Normalize(spec.mean, spec.std),
            ]
        )
        self.tokenizer = trained.tokenizer

    def photo(self, data: bytes) -> torch.Tensor:
        pixels: torch.Tensor = self.transform(Image.open(io.BytesIO(data)).convert("RGB"))
        return pixels[None].to(self.device)

    def tokens(self, text: str) -> torch.Tensor:
        return torch.from_numpy(self.tokenizer.encode(text))[None].to(self.device)

    def prediction(self, logits: torch.Tensor) -> Prediction:
        ranked = self.labels.rank(torch.softmax(logits, dim=1)[0].cpu().numpy())
        return Prediction(
            pred=ranked[0][0], classes=[c for c, _ in ranked], probabilities=[p for _, p in ranked]
        )


def create_app(run_dir: Path, threads: int = 2, device: str = "auto") -> FastAPI:
    torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    models = SeedModels(run_dir, torch.device(device))
    app = FastAPI(title="seed-style server")

    @app.post(PREDICT_IMAGE_PATH, response_model=Prediction)
    def predict_image(photo: UploadFile = File(...)) -> Prediction:
        with torch.inference_mode():
            _, logits = models.image(models.photo(photo.file.read()))
        return models.prediction(logits)

    @app.post(PREDICT_TEXT_PATH, response_model=Prediction)
    def predict_text(body: TextQuery) -> Prediction:
        with torch.inference_mode():
            _, logits = models.text(models.tokens(body.text))
        return models.prediction(logits)

    @app.post(PREDICT_COMBINED_PATH, response_model=Prediction)
    def predict_combined(photo: UploadFile = File(...), text: str = Form(...)) -> Prediction:
        with torch.inference_mode():
            image_embedding = models.image.encoder(models.photo(photo.file.read()))
            _, logits = models.fusion(image_embedding, models.tokens(text))
        return models.prediction(logits)

    @app.post(SIMILAR_PATH)
    def similar() -> JSONResponse:
        return JSONResponse({"error": "no similar-listing index in the seed-style server"}, 501)

    @app.get(HEALTHZ_PATH)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="trained run directory (fbmr train)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda")
    args = parser.parse_args()
    app = create_app(args.run, args.threads, args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
