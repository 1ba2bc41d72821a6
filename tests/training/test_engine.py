import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fbmr.core.schema import SchemaVersionError
from fbmr.training.averaging import running_mean
from fbmr.training.checkpoints import load_checkpoint
from fbmr.training.engine import fit
from fbmr.training.stage_settings import FitSettings


class Linear(nn.Module):
    """The smallest model `fit` trains: (embedding, logits) of a linear layer."""

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(6) if batch_norm else nn.Identity()
        self.layer = nn.Linear(6, 3)
        self.register_buffer("ids", torch.arange(4))  # not floating point: never averaged

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(x)
        return x, self.layer(x)


def _data(seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())


def _fit(stage_dir, epochs: int, average_from: int | None, snapshots: list | None = None):
    torch.manual_seed(0)
    model = Linear()
    settings = FitSettings(
        epochs=epochs, batch_size=8, lr=0.05, patience=99, progress=False, average_from=average_from
    )

    def snapshot(record: dict) -> None:
        if snapshots is not None:
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    history = fit(model, _data(1), _data(2), stage_dir, settings, torch.device("cpu"), {},
                  on_epoch=snapshot)  # fmt: skip
    return model, history


def test_running_mean_is_the_mean_and_keeps_integer_entries():
    states = [{"w": torch.tensor([float(i), 2.0 * i]), "ids": torch.tensor([i])} for i in range(4)]
    mean = None
    for count, state in enumerate(states):
        mean = running_mean(mean, count, state)
    torch.testing.assert_close(mean["w"], torch.tensor([1.5, 3.0]))
    assert mean["ids"].tolist() == [3]
    assert states[0]["w"].tolist() == [0.0, 0.0]  # the inputs are left as they were


def test_weight_averaging_keeps_the_mean_of_the_epochs_since_it_began(tmp_path):
    live: list[dict] = []
    model, history = _fit(tmp_path, epochs=5, average_from=2, snapshots=live)
    assert [r["averaged"] for r in history] == [False, False, True, True, True]
    best = load_checkpoint(tmp_path / "best.pt")
    epoch = best["epoch"]
    # validation chooses an averaged epoch on this data; the kept weights are the mean of the
    # live weights at the end of epochs 2..epoch
    assert epoch >= 2
    expected = torch.stack([s["layer.weight"] for s in live[2 : epoch + 1]]).mean(0)
    torch.testing.assert_close(best["model"]["layer.weight"], expected)
    torch.testing.assert_close(model.layer.weight, expected)  # fit leaves the model at the best
    # training went on from the live weights: they are those of a run that never averaged
    plain: list[dict] = []
    _fit(tmp_path / "plain", epochs=5, average_from=None, snapshots=plain)
    for averaging, not_averaging in zip(live, plain, strict=True):
        torch.testing.assert_close(averaging, not_averaging, rtol=0, atol=0)


def test_an_interrupted_averaging_run_resumes_to_the_same_average(tmp_path):
    whole, _ = _fit(tmp_path / "whole", epochs=5, average_from=1)
    _fit(tmp_path / "cut", epochs=3, average_from=1)  # stopped after epoch 2
    resumed, history = _fit(tmp_path / "cut", epochs=5, average_from=1)
    assert len(history) == 5
    last = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert last["averaged"] == 4
    torch.testing.assert_close(
        load_checkpoint(tmp_path / "whole" / "last.pt")["average"], last["average"]
    )
    torch.testing.assert_close(resumed.state_dict(), whole.state_dict())


def test_resuming_with_other_weight_averaging_is_refused(tmp_path):
    _fit(tmp_path, epochs=2, average_from=None)
    with pytest.raises(ValueError, match="weight averaging from epoch None, not 1"):
        _fit(tmp_path, epochs=4, average_from=1)


class FrozenThenTrained(nn.Module):
    """A frozen batch norm (kept in eval mode, as a frozen trunk stage is), then a trained one."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.BatchNorm1d(6)
        self.frozen.running_mean.fill_(0.25)
        self.frozen.requires_grad_(False)
        self.trained = Linear(batch_norm=True)

    def train(self, mode: bool = True) -> "FrozenThenTrained":
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.trained(self.frozen(x))


def test_averaged_weights_get_batch_norm_statistics_of_their_own(tmp_path):
    torch.manual_seed(0)
    model = FrozenThenTrained()
    settings = FitSettings(epochs=3, batch_size=8, lr=0.05, progress=False, average_from=1)
    fit(model, _data(1), _data(2), tmp_path, settings, torch.device("cpu"), {})
    best = load_checkpoint(tmp_path / "best.pt")["model"]
    # measured over the training inputs (as the frozen norm passes them on) for the averaged
    # weights: equal batches, so the cumulative mean of batch means is the mean
    inputs = model.frozen(_data(1).tensors[0])
    torch.testing.assert_close(best["trained.norm.running_mean"], inputs.mean(0))
    # the frozen norm keeps the statistics it was given
    assert (best["frozen.running_mean"] == 0.25).all()
    assert model.trained.norm.momentum == 0.1  # training's own momentum restored


def test_a_checkpoint_of_another_format_is_refused_with_what_to_rerun(tmp_path):
    torch.save({"format": "fbmr.checkpoint/1", "model": {}}, tmp_path / "old.pt")
    with pytest.raises(SchemaVersionError, match=r"format 'fbmr.checkpoint/1'.*--force"):
        load_checkpoint(tmp_path / "old.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an fbmr checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_one_builder_reads_each_stages_settings():
    from fbmr.training.config import TrainConfig
    from fbmr.training.stage_settings import fit_settings

    config = TrainConfig(workers=3, text_lr=0.5, image_average_from=4, fusion_epochs=7)
    text = fit_settings(config, "text", pretrained=True)
    assert (text.lr, text.workers, text.pretrained_lr) == (0.5, 0, config.text_sentence_lr)
    assert text.label_smoothing == config.text_label_smoothing
    image = fit_settings(config, "image", pretrained=False, epochs=2)
    assert (image.epochs, image.average_from, image.workers, image.pretrained_lr) == (2, 4, 3, None)
    assert fit_settings(config, "image", pretrained=True).pretrained_lr == config.image_trunk_lr
    fusion = fit_settings(config, "fusion")
    assert (fusion.epochs, fusion.label_smoothing, fusion.average_from) == (7, 0.0, None)
    with pytest.raises(ValueError, match="word2vec"):
        fit_settings(config, "word2vec")


class Recording(Linear):
    """Linear, keeping each training batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(x.detach().clone())
        return super().forward(x)


def test_mixup_mixes_each_batch_with_itself_shuffled_and_weighs_both_targets(monkeypatch):
    from fbmr.training.engine import train_one_epoch
    from fbmr.training.optim import SplitAdam

    data = _data(3)
    x, y = data.tensors
    order = torch.arange(len(y) - 1, -1, -1)  # the shuffle, fixed here: the batch reversed
    monkeypatch.setattr(torch, "randperm", lambda n, device=None: order)
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, *shape: torch.tensor(0.7))
    loader = torch.utils.data.DataLoader(data, batch_size=len(y))  # one batch: the whole set
    losses: list[tuple[torch.Tensor, float]] = []

    def objective(embedding, logits, target, loss_fn):
        losses.append((target.clone(), float(loss_fn(logits, target).detach())))
        return loss_fn(logits, target)

    def epoch(mixup: float) -> tuple[Recording, float]:
        model = Recording()
        optimizer = SplitAdam(model.parameters(), [], lr=0.0, weight_decay=0.0)  # no step moves
        loss, _ = train_one_epoch(
            model, nn.CrossEntropyLoss(), optimizer, loader, torch.device("cpu"), "mix",
            progress=False, objective=objective, mixup=mixup,
        )  # fmt: skip
        return model, loss

    model, loss = epoch(0.4)
    assert torch.allclose(model.seen[0], 0.7 * x + 0.3 * x[order])
    (own, against_own), (other, against_other) = losses
    assert torch.equal(own, y) and torch.equal(other, y[order])
    assert loss == pytest.approx(0.7 * against_own + 0.3 * against_other, rel=1e-5)
    # mixed the other way round (0.3): top-1 counts against the heavier, shuffled targets
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, *shape: torch.tensor(0.3))
    torch.manual_seed(0)  # a model whose top-1 differs between the two targets
    model = Recording()
    optimizer = SplitAdam(model.parameters(), [], lr=0.0, weight_decay=0.0)
    _, top1 = train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, loader,
                              torch.device("cpu"), "mix", progress=False, mixup=0.4)  # fmt: skip
    logits = model(0.3 * x + 0.7 * x[order])[1]
    assert top1 == pytest.approx(float((logits.argmax(1) == y[order]).float().mean()))
    assert top1 != pytest.approx(float((logits.argmax(1) == y).float().mean()))
    # without mixup the batch goes in as it is, against its own targets alone
    losses.clear()
    model, loss = epoch(0.0)
    assert torch.equal(model.seen[0], x) and len(losses) == 1
    assert loss == pytest.approx(losses[0][1], rel=1e-6)


def test_the_image_stage_reads_its_mixup_setting():
    from fbmr.training.config import TrainConfig
    from fbmr.training.stage_settings import fit_settings

    assert fit_settings(TrainConfig(image_mixup=0.2), "image").mixup == 0.2
    assert fit_settings(TrainConfig(image_mixup=0.2), "text").mixup == 0.0


@pytest.mark.parametrize("crop", [0.3, 1.2])
def test_a_crop_that_would_enlarge_or_shred_the_photo_is_refused(crop):
    from fbmr.training.config import TrainConfig

    with pytest.raises(ValueError, match="image_crop must be in"):
        TrainConfig(image_crop=crop)
