"""The sentence member (fbmr.training.sentence) and its WordPiece ids (fbmr.core.wordpiece), held
to the reference implementations (Hugging Face transformers) on MiniLM's real weights."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference loads from the package's files

import pytest
import torch

from fbmr.core.wordpiece import WordPiece
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.models import TextModel
from fbmr.training.optim import SplitAdam, pretrained_parameters, sparse_parameters
from fbmr.training.sentence import (
    TINY,
    Bert,
    SentenceMember,
    SentenceSpec,
    minilm_dir,
    pretrained_shape,
    vocabulary,
)

transformers = pytest.importorskip("transformers")

TRICKY = [
    "Café crème ½ £5,000 — naïve 東京 \x07 ok",
    "Sofabed!! (grey) 3-seater... w/ cushions & throws; 50% OFF",
    "a" * 150,
    "Sofa [SEP] bed [UNK] x [MASK]y [CLS]",
    "",
    "\uff26\uff55\uff4c\uff4c-width chars and emoji \U0001f642 tab\tnew\nline",
]


def _texts(demo_prepared) -> list[str]:
    data = PreparedDataset(demo_prepared)
    return [*data.products("train").apply(data.text, axis=1).tolist()[:300], *TRICKY]


def test_wordpiece_ids_are_the_reference_tokenizers(demo_prepared):
    reference = transformers.BertTokenizer(str(minilm_dir() / "vocab.txt"), do_lower_case=True)
    pieces = WordPiece(vocabulary(), length=64)
    for text in _texts(demo_prepared):
        expected = reference(text, truncation=True, max_length=64, padding="max_length")
        assert pieces.encode(text).tolist() == expected["input_ids"], text


def test_bert_gives_the_reference_hidden_states_on_minilm_weights(demo_prepared):
    reference = transformers.AutoModel.from_pretrained(str(minilm_dir())).eval()
    bert = Bert(pretrained_shape())
    bert.load_pretrained(minilm_dir())
    bert.eval()
    pieces = WordPiece(vocabulary(), length=32)
    texts = [*_texts(demo_prepared)[:8], *TRICKY[:2]]
    ids = torch.stack([torch.from_numpy(pieces.encode(t)) for t in texts])
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
        got = bert.run(bert.embeddings(ids), ids > 0, range(bert.shape.num_hidden_layers))
    tokens = ids > 0  # padding positions are read by no token: their states do not matter
    torch.testing.assert_close(got[tokens], expected[tokens], atol=1e-4, rtol=0)


def test_frozen_layers_answer_as_cached_in_training_and_never_train():
    torch.manual_seed(0)
    member = SentenceMember(TINY, dim=16, frozen=1, length=8)
    ids = torch.randint(5, 1000, (4, 8))
    ids[1, 5:] = 0
    member.eval()
    cached = member.lower(ids)  # what the text stage caches, in eval
    member.train()  # dropout on in the layers that train, off in the frozen ones
    torch.testing.assert_close(member.lower(ids), cached)
    frozen = {n: p.detach().clone() for n, p in member.named_parameters() if not p.requires_grad}
    assert any(n.startswith("bert.encoder.layer.0.") for n in frozen)
    assert all(p.requires_grad for p in member.bert.encoder.layer[1].parameters())
    upper = member.bert.encoder.layer[1].output.dense.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in member.parameters() if p.requires_grad], lr=0.1)
    member(ids, cached).pow(2).sum().backward()
    optimizer.step()
    for name, parameter in member.named_parameters():
        if name in frozen:
            torch.testing.assert_close(parameter, frozen[name])
    assert not torch.equal(member.bert.encoder.layer[1].output.dense.weight, upper)


def test_the_sentence_member_reads_the_pieces_that_end_the_token_ids():
    torch.manual_seed(0)
    spec = SentenceSpec(TINY, frozen=1, length=8)
    bags = dict(vocab_size=50, word_dim=8, filters=0, max_words=6, ngram_buckets=400, ngram_dim=5)
    model = TextModel(13, embedding_dim=24, members=2, sentence=spec, **bags).eval()
    parts = [(0, 50, 6), (1, 400, 4), (1, 3, 4), (5, 900, 8)]  # words, n-grams, counts, pieces
    ids = torch.cat([torch.randint(lo, hi, (3, n)) for lo, hi, n in parts], dim=1)
    ids[0, -3:] = 0  # a short text: its WordPiece ids padded
    embedding, logits = model(ids)
    assert embedding.shape == (3, 24) and logits.shape == (3, 13)
    member = model.sentence
    assert member is not None
    torch.testing.assert_close(embedding[:, 16:], member(ids[:, -8:]))
    # the cached frozen layers' output gives the same answer as running them, and is what the
    # member reads when given
    _, cached = model(ids, member.lower(ids[:, -8:]))
    torch.testing.assert_close(cached, logits)
    _, other = model(ids, torch.zeros_like(member.lower(ids[:, -8:])))
    assert not torch.allclose(other, logits)


def test_pretrained_weights_step_at_their_own_learning_rate():
    model = TextModel(13, embedding_dim=24, members=1, sentence=SentenceSpec(TINY, 1, 8),
                      vocab_size=50, word_dim=8, filters=0, max_words=6, ngram_buckets=400,
                      ngram_dim=5)  # fmt: skip
    slow = pretrained_parameters(model)
    assert slow and {id(p) for p in slow} == {id(p) for p in model.sentence.bert.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = SplitAdam(trainable, sparse_parameters(model), 1e-2, 0.0, slow=slow, slow_lr=1e-5)
    groups = optimizer.optimizers["dense"].param_groups
    assert [g["lr"] for g in groups] == [1e-2, 1e-5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in slow if p.requires_grad}
