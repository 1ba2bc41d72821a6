import math

import numpy as np
import pytest
import torch
from torch import nn

from fbmr.training.metrics import classification_metrics
from fbmr.training.models import (
    FusionHead,
    FusionModel,
    ImageModel,
    NgramBag,
    TextModel,
)
from fbmr.training.trunks import Backbone


def test_text_and_fusion_shapes():
    text = TextModel(13, embedding_dim=24, vocab_size=50, word_dim=8, filters=4, widths=(2, 3))
    ids = torch.randint(0, 50, (3, 10))
    embedding, logits = text(ids)
    assert embedding.shape == (3, 24) and logits.shape == (3, 13)
    # Very short texts still work: convolutions are padded.
    assert text(torch.tensor([[5]]))[0].shape == (1, 24)
    fusion = FusionModel(text.encoder, FusionHead(16, 24, 13, embedding_dim=20))
    combined, logits = fusion(torch.randn(3, 16), ids)
    assert combined.shape == (3, 20) and logits.shape == (3, 13)


def test_text_encoder_reads_word_ids_and_hashed_ngrams_from_one_array():
    torch.manual_seed(0)
    both = TextModel(13, embedding_dim=24, vocab_size=50, word_dim=8, filters=4, widths=(2, 3),
                     max_words=6, ngram_buckets=100, ngram_dim=5)  # fmt: skip
    bag_only = TextModel(13, embedding_dim=24, vocab_size=50, word_dim=8, filters=0,
                         max_words=6, ngram_buckets=100, ngram_dim=5)  # fmt: skip
    # 6 word ids, then 5 n-gram slots (ids 1..50 word n-grams, 51..100 character n-grams), then
    # the n-grams' counts
    words = torch.randint(0, 50, (3, 6))
    ngrams = torch.tensor([[3, 60, 70, 0, 0], [4, 5, 99, 51, 8], [1, 0, 0, 0, 0]])
    counts = torch.tensor([[1, 1, 2, 0, 0], [1, 3, 1, 1, 2], [4, 0, 0, 0, 0]])
    ids = torch.cat([words, ngrams, counts], dim=1)
    for model in (both, bag_only):
        embedding, logits = model.eval()(ids)
        assert embedding.shape == (3, 24) and logits.shape == (3, 13)
    # The bag ignores padding and the order of its n-grams; the word part does not reach it.
    shuffled = ids.clone()
    shuffled[:, 6:11], shuffled[:, 11:] = ngrams.flip(1), counts.flip(1)
    shuffled[:, :6] = 7
    torch.testing.assert_close(bag_only(shuffled)[0], bag_only(ids)[0])
    # Word and character n-grams are each an l2-normalised TF-IDF-weighted sum (idf 1 here):
    # tf 1 + ln(count).
    bag, table = bag_only.encoder.bag, bag_only.encoder.bag.embedding.weight
    tf = 1.0 + math.log(2.0)
    expected = table[3] + (table[60] + tf * table[70]) / math.sqrt(1.0 + tf**2)
    torch.testing.assert_close(bag(ngrams[:1], counts[:1])[0], expected)
    with pytest.raises(ValueError, match="needs the CNN"):
        TextModel(13, vocab_size=50, word_dim=8, filters=0)


def test_stacked_fusion_head_starts_as_the_text_model():
    torch.manual_seed(0)
    text = TextModel(13, embedding_dim=24, vocab_size=50, word_dim=8, filters=4, widths=(2, 3))
    image_head = ImageModel(Backbone.resnet18, 13, embedding_dim=16, weights="none").head
    head = FusionHead(16, 24, 13, embedding_dim=20, image_head=image_head,
                      text_head=text.head, modality_dropout=0.5)  # fmt: skip
    fusion = FusionModel(text.encoder, head).eval()
    ids = torch.randint(0, 50, (3, 10))
    combined, logits = fusion(torch.randn(3, 16), ids)
    assert combined.shape == (3, 20)
    torch.testing.assert_close(logits, text.eval()(ids)[1])
    # Only the stacking weights and the combined head learn; the copied heads stay frozen.
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert "weights" in trainable and not any(n.startswith("text_head") for n in trainable)
    head.train()
    assert not head.text_head.training and head.mlp.training


def test_an_ensemble_concatenates_its_members_and_averages_their_log_probabilities():
    torch.manual_seed(0)
    args = dict(vocab_size=50, word_dim=8, filters=0, max_words=6, ngram_buckets=100, ngram_dim=5)
    ensemble = TextModel(13, embedding_dim=24, members=3, **args).eval()
    ids = torch.cat([torch.randint(0, 50, (4, 6)), torch.randint(1, 101, (4, 5)),
                     torch.randint(1, 3, (4, 5))], dim=1)  # fmt: skip
    embedding, logits = ensemble(ids)
    assert embedding.shape == (4, 24) and logits.shape == (4, 13)
    members = ensemble.encoders
    assert len(members) == 3
    # each member its own table, started apart, and its own 8 columns of the embedding
    assert not torch.equal(members[0].bag.embedding.weight, members[1].bag.embedding.weight)
    for k, member in enumerate(members):
        torch.testing.assert_close(embedding[:, 8 * k : 8 * (k + 1)], member(ids))
    own = ensemble.member_logits(embedding)
    assert [m.shape for m in own] == [(4, 13)] * 3
    for k, member_logits in enumerate(own):
        torch.testing.assert_close(member_logits, ensemble.head.heads[k](members[k](ids)))
    mean_log_probs = torch.stack([torch.log_softmax(m, dim=1) for m in own]).mean(dim=0)
    torch.testing.assert_close(logits, mean_log_probs)
    # the fusion head stacks the ensemble's logits as it does one model's
    head = FusionHead(16, 24, 13, embedding_dim=20, image_head=nn.Linear(16, 13),
                      text_head=ensemble.head)  # fmt: skip
    torch.testing.assert_close(
        FusionModel(ensemble.encoder, head).eval()(torch.randn(4, 16), ids)[1], logits
    )
    with pytest.raises(ValueError, match="does not split into 5"):
        TextModel(13, embedding_dim=24, members=5, **args)
    # one member is the plain model, as checkpoints from before the ensemble hold it
    single = TextModel(13, embedding_dim=24, **args)
    assert single.encoders == [single.encoder]
    assert not any(key.startswith("encoder.members") for key in single.state_dict())


def test_classification_metrics():
    logits = np.array([[3, 2, 1], [1, 3, 2], [1, 2, 3], [3, 2, 1]], dtype=float)
    targets = np.array([0, 2, 0, 1])
    metrics = classification_metrics(logits, targets, 3)
    assert metrics["top1"] == pytest.approx(0.25)
    assert metrics["top3"] == pytest.approx(1.0)
    # Per class F1: class 0: p=1/2, r=1/2 -> 0.5; classes 1 and 2: 0.
    assert metrics["macro_f1"] == pytest.approx(0.5 / 3)
    assert metrics["count"] == 4


def test_the_names_ngrams_are_summed_apart_and_dropped_in_training_only():
    torch.manual_seed(0)
    bag = NgramBag(100, 5, kinds=4, name_dropout=0.5)
    # ids 1..25 words, 26..50 characters, 51..75 the name's words, 76..100 its characters
    ngrams = torch.tensor([[3, 30, 60, 80, 90]] * 64)
    counts = torch.tensor([[1, 1, 1, 1, 1]] * 64)
    table = bag.embedding.weight
    text_part = table[3] + table[30]
    name_part = table[60] + (table[80] + table[90]) / math.sqrt(2.0)
    bag.eval()
    torch.testing.assert_close(bag(ngrams[:1], counts[:1])[0], text_part + name_part)
    # In training, a listing keeps its name's n-grams or loses both kinds of them together.
    outputs = bag.train()(ngrams, counts).detach()
    kept = torch.isclose(outputs, (text_part + name_part).detach()).all(dim=1)
    dropped = torch.isclose(outputs, text_part.detach()).all(dim=1)
    assert (kept | dropped).all() and kept.any() and dropped.any()


def test_set_idf_keeps_table_rows_for_the_weighed_ngrams_alone():
    torch.manual_seed(0)
    bag = NgramBag(100, 5)
    train = torch.tensor([[3, 60, 70, 0], [3, 60, 0, 0], [3, 9, 0, 0]])
    bag.set_idf(train)  # ids 3 and 60 are in two texts or more; 70 and 9 in one
    assert bag.rows == 2 and bag.embedding.weight.shape == (3, 5)
    assert bag.weights[1:].tolist() == pytest.approx([math.log(4 / 4) + 1, math.log(4 / 3) + 1])
    # The same as a table with a row per id that holds those rows and weighs the rest 0.
    full = NgramBag(100, 5)
    with torch.no_grad():
        full.embedding.weight.zero_()
        full.embedding.weight[[3, 60]] = bag.embedding.weight[1:]
        full.weights.zero_()
        full.weights[[3, 60]] = bag.weights[1:]
    ngrams = torch.tensor([[3, 60, 70, 9], [9, 60, 0, 0], [5, 0, 0, 0]])
    counts = torch.tensor([[1, 2, 1, 1], [3, 1, 0, 0], [1, 0, 0, 0]])
    torch.testing.assert_close(bag(ngrams, counts), full(ngrams, counts))
    # A checkpoint loads into a bag built with its shape; the table is pruned once only.
    again = NgramBag(100, 5, rows=bag.rows)
    again.load_state_dict(bag.state_dict())
    torch.testing.assert_close(again(ngrams, counts), bag(ngrams, counts))
    with pytest.raises(ValueError, match="already"):
        bag.set_idf(train)


def test_a_member_reading_a_view_weighs_only_its_kinds_of_ngram():
    # ids 1..25 words, 26..50 characters, 51..75 the name's words, 76..100 its characters
    train = torch.tensor([[3, 30, 60, 80], [3, 30, 60, 80]])
    ngrams = torch.tensor([[3, 30, 60, 80], [30, 80, 0, 0]])
    counts = torch.ones_like(ngrams)
    read = {}
    for view in ("all", "words", "chars"):
        bag = NgramBag(100, 5, kinds=4)
        bag.set_idf(train, view=view)
        read[view] = {i for i in (3, 30, 60, 80) if bag.row_of[i] > 0}
        if view == "words":
            # a text with none of the view's n-grams embeds as nothing
            assert bag.eval()(ngrams, counts)[1].abs().max() == 0
            table = bag.embedding.weight
            torch.testing.assert_close(bag(ngrams, counts)[0], table[1] + table[2])
    # the name's kinds go with their text's: words are 3 and 60, characters 30 and 80
    assert read == {"all": {3, 30, 60, 80}, "words": {3, 60}, "chars": {30, 80}}
    with pytest.raises(KeyError):
        NgramBag(100, 5, kinds=4).set_idf(train, view="bigrams")


def test_ensemble_members_keep_tables_of_their_own_sizes():
    args = dict(vocab_size=50, word_dim=8, filters=0, max_words=6, ngram_buckets=100, ngram_dim=5)
    model = TextModel(13, embedding_dim=24, members=3, ngram_rows=[4, 2, 3], **args)
    assert [m.bag.rows for m in model.encoders] == [4, 2, 3]
    with pytest.raises(ValueError, match="2 n-gram table sizes for 3 members"):
        TextModel(13, embedding_dim=24, members=3, ngram_rows=[4, 2], **args)
