"""Captioning: vocabulary, decoders, BLEU, the COCO and Karpathy formats, and a run through the real
configs, trainer, evaluate.py and the ``python -m zoo caption`` predict path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import make_cfg
from zoo.__main__ import main as zoo_main
from zoo.data import build_datamodule
from zoo.data.captions import SPECIALS, Vocabulary, tokenize
from zoo.errors import ConfigError, DataNotFoundError
from zoo.metrics.captioning import corpus_bleu
from zoo.models import create_model
from zoo.models.captioner import Captioner
from zoo.pipeline import evaluate, train

VOCAB = 12


def tiny(cell: str = "lstm", image_as: str = "input", seed: int = 0, **kw: Any) -> Captioner:
    torch.manual_seed(seed)
    model = create_model(f"captioner_resnet20_{cell}", vocab_size=VOCAB, in_chans=1, embed_dim=16, hidden_dim=24,
                         image_as=image_as, **{"pool_size": 2, **kw})
    return model.eval()  # type: ignore[return-value]


# ---- vocabulary ------------------------------------------------------------------------------------------------


def test_vocabulary_min_freq_specials_and_round_trip():
    vocab = Vocabulary.build(["A 3 left of a 7.", "a 3 above a 1", "a zebra"], min_freq=2)
    assert vocab.tokens[: len(SPECIALS)] == list(SPECIALS) and vocab.pad == 0
    assert vocab.tokens[4:] == ["a", "3"]  # most frequent first; words seen once are dropped
    ids = vocab.encode("a 3 left of a 3")
    assert ids[0] == vocab.bos and ids[-1] == vocab.eos and ids.count(vocab.unk) == 2
    assert vocab.decode(ids + [vocab.index["a"]]) == ["a", "3", "<unk>", "<unk>", "a", "3"]  # stops at <eos>
    batch = vocab.batch(["a", "a 3 a"])
    assert batch.tolist() == [[1, 4, 2, 0, 0], [1, 4, 5, 4, 2]]
    assert tokenize("A man's DOG, running!") == ["a", "man's", "dog", "running"]
    with pytest.raises(ConfigError, match="min_freq"):
        Vocabulary.build(["a"], min_freq=0)


# ---- model and decoders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,image_as", [("rnn", "input"), ("lstm", "input"), ("gru", "input"), ("lstm", "state"), ("gru", "state"),
                                           ("lstm", "grid"), ("lstm", "attention"), ("gru", "attention"), ("rnn", "attention")])
def test_beam_search_with_beam_1_equals_greedy(cell: str, image_as: str):
    model = tiny(cell, image_as)
    images = torch.randn(4, 1, 32, 32)
    greedy = model.greedy(images, max_len=9)
    beam, scores = model.beam_search(images, beam_size=1, max_len=9)
    assert torch.equal(beam, greedy)
    assert torch.isfinite(scores).all() and (scores <= 0).all()


@pytest.mark.parametrize("image_as", ["input", "state", "grid", "attention"])
def test_teacher_forced_logits_are_causal(image_as: str):
    model = tiny(image_as=image_as)
    images, tokens = torch.randn(2, 1, 32, 32), torch.randint(3, VOCAB, (2, 7))
    tokens[:, 0] = model.bos_id
    logits = model(images, tokens)
    assert logits.shape == (2, 6, VOCAB)
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 3) % (VOCAB - 3) + 3
    other = model(images, changed)
    assert torch.allclose(logits[:, :4], other[:, :4])  # prediction t sees words < t+1 only
    assert not torch.allclose(logits[:, 4:], other[:, 4:])
    # the decoding step computes the same next-word distribution as teacher forcing
    state = model.init_state(images)
    step, _ = model.step(tokens[:, 0], state)
    assert torch.allclose(step[:, 3:], logits[:, 0, 3:], atol=1e-5)


def test_attention_weights_are_a_distribution_over_the_grid_that_follows_the_words():
    model = tiny(image_as="attention", pool_size=None)  # attend over ResNet-20's full 8x8 map of a 32 px image
    images, tokens = torch.randn(2, 1, 32, 32), torch.randint(3, VOCAB, (2, 6))
    tokens[:, 0] = model.bos_id
    maps = model.attention_maps(images, tokens)
    assert maps.shape == (2, 5, 8, 8) and (maps >= 0).all()
    assert torch.allclose(maps.sum((-1, -2)), torch.ones(2, 5))
    assert not torch.allclose(maps[:, 1], maps[:, 2])  # each step attends anew
    with torch.no_grad():
        model.attention.score.weight.zero_()  # equal scores: equal weights, the context is the mean cell
    uniform = model.attention_maps(images, tokens)
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / 64))
    with pytest.raises(ConfigError, match="image_as=attention"):
        tiny().attention_maps(images, tokens)


def _force(model: Captioner, token: int) -> Captioner:
    """Make ``token`` the most likely next word whatever the input."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-5.0)
        model.head.bias[token] = 5.0
    return model


def test_decoding_stops_at_end_token_or_max_length():
    images = torch.randn(3, 1, 32, 32)
    model = _force(tiny(), tiny().eos_id)
    for seqs in (model.greedy(images, 7), model.beam_search(images, 3, 7)[0], model.sample(images, 7, temperature=0.05)):
        assert seqs.shape == (3, 7)
        assert (seqs[:, 0] == model.eos_id).all() and (seqs[:, 1:] == model.pad_id).all()
    word = 5
    model = _force(tiny(), word)
    for seqs in (model.greedy(images, 7), model.beam_search(images, 3, 7)[0]):
        assert seqs.shape == (3, 7) and (seqs == word).all()  # never ends: cut at max_len


def test_beam_search_keeps_the_better_hypothesis():
    """A path greedy cannot find: a less likely first word that makes the rest certain."""
    model = tiny(image_as="state", cell="rnn")

    # word 3 first (p=0.6) then a coin flip over 4 or 5 before <eos>; word 6 first (p=0.4) then <eos> for sure
    probs = torch.full((VOCAB, VOCAB), 1e-9)
    probs[model.bos_id, 3], probs[model.bos_id, 6] = 0.6, 0.4
    probs[3, 4], probs[3, 5] = 0.5, 0.5
    probs[4, model.eos_id] = probs[5, model.eos_id] = probs[6, model.eos_id] = 1.0
    table = probs.log()

    def step(tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        logits = table[tokens].clone()
        logits[:, [model.pad_id, model.bos_id]] = float("-inf")
        return logits, state

    model.step = step  # type: ignore[method-assign]
    images = torch.randn(1, 1, 32, 32)
    assert model.greedy(images, 5)[0, :3].tolist() == [3, 4, model.eos_id]  # 0.6 * 0.5 = 0.3
    seq, score = model.beam_search(images, 2, 5)
    assert seq[0, :2].tolist() == [6, model.eos_id] and score.item() == pytest.approx(np.log(0.4), abs=1e-4)


def test_frozen_encoder_gets_no_gradients_and_stays_in_eval_mode():
    model = tiny(freeze_encoder=True).train()
    assert not model.encoder.training and model.rnn.training
    tokens = torch.tensor([[1, 4, 5, 2], [1, 6, 2, 0]])
    model(torch.randn(2, 1, 32, 32), tokens).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head.weight.grad is not None


def test_bad_model_options_raise_config_error():
    with pytest.raises(ConfigError, match="cell"):
        create_model("captioner", vocab_size=10, cell="transformer", encoder="lenet5")
    with pytest.raises(ConfigError, match="pool_size=null"):
        tiny(image_as="input", pool_size=None)
    with pytest.raises(ConfigError, match="image_as"):
        tiny(image_as="attend")
    with pytest.raises(ConfigError, match="temperature"):
        tiny().sample(torch.randn(1, 1, 32, 32), 3, temperature=0)


# ---- metrics ----------------------------------------------------------------------------------------------------


def test_corpus_bleu_on_known_inputs():
    ref = [["a", "3", "left", "of", "a", "7"]]
    assert corpus_bleu([ref], [ref[0]]) == {f"bleu{n}": 1.0 for n in range(1, 5)}
    scores = corpus_bleu([ref], [["a", "3", "left", "of", "a", "8"]])
    # modified precisions 5/6, 4/5, 3/4, 2/3; same length, so no brevity penalty
    assert scores["bleu1"] == pytest.approx(5 / 6)
    assert scores["bleu4"] == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)
    assert corpus_bleu([ref], [[]], prefix="beam_")["beam_bleu4"] == 0.0


# ---- on-disk formats --------------------------------------------------------------------------------------------


def _write_images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(folder / name)


def make_coco(root: Path) -> None:
    """A tiny COCO-captions layout: 3 training images (2-3 captions each), 2 validation images."""
    captions = {
        "train2017": {1: ["A dog runs.", "a dog running on grass"], 2: ["A cat sleeps", "a cat on a bed", "cat"], 3: ["a dog and a cat"]},
        "val2017": {7: ["a dog sleeps"], 8: ["a red bus"]},
    }
    (root / "annotations").mkdir(parents=True)
    for split, per_image in captions.items():
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 20, "width": 30} for i in per_image]
        anns = [{"id": 100 * i + k, "image_id": i, "caption": c} for i, caps in per_image.items() for k, c in enumerate(caps)]
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": anns}))
        _write_images(root / split, [im["file_name"] for im in images])


def test_tiny_coco_fixture_loads(tmp_path: Path):
    make_coco(tmp_path / "coco")
    cfg = {"name": "coco_captions", "root": str(tmp_path / "coco"), "image_size": 16, "min_freq": 2, "batch_size": 2,
           "num_workers": 0}
    data = build_datamodule(cfg)
    assert data.sizes() == {"train": 3, "val": 2, "test": 2}
    assert data.info["vocab"][4:] == ["a", "cat", "dog", "on"] and data.info["vocab_size"] == 8
    images, targets = next(iter(data.test))
    assert images.shape == (2, 3, 16, 16)
    assert [t["image_id"] for t in targets] == [7, 8] and targets[0]["captions"] == ["a dog sleeps"]
    assert images[1].mean() > images[0].mean()  # the files pair with their captions (brighter second image)
    train_targets = [t for _, batch in data.train for t in batch]
    assert sorted(len(t["captions"]) for t in train_targets) == [1, 2, 3]
    with pytest.raises(DataNotFoundError, match="does not exist"):
        build_datamodule({**cfg, "root": str(tmp_path / "nowhere")})
    with pytest.raises(DataNotFoundError, match="captions_test2017.json"):
        build_datamodule({**cfg, "test_split": "test2017"})


def test_karpathy_json_splits(tmp_path: Path):
    images = [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A dog.", "tokens": ["a", "dog"]}]},
        {"filename": "b.jpg", "split": "restval", "sentences": [{"tokens": ["a", "cat"]}]},
        {"filename": "c.jpg", "split": "val", "sentences": [{"raw": "a bus"}]},
        {"filename": "d.jpg", "split": "test", "sentences": [{"raw": "a dog"}, {"raw": "one dog"}]},
    ]
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    _write_images(tmp_path / "images", [im["filename"] for im in images])
    cfg = {"name": "karpathy", "root": str(tmp_path), "image_size": 8, "min_freq": 1, "batch_size": 4, "num_workers": 0}
    data = build_datamodule(cfg)
    assert data.sizes() == {"train": 2, "val": 1, "test": 1}  # restval joins train
    assert set(data.info["vocab"][4:]) == {"a", "dog", "cat"}
    _, targets = next(iter(data.test))
    assert targets[0]["captions"] == ["a dog", "one dog"]
    assert build_datamodule({**cfg, "restval_to_train": False}).sizes()["val"] == 2
    with pytest.raises(DataNotFoundError, match="dataset_coco.json"):
        build_datamodule({**cfg, "json_file": "dataset_coco.json"})


# ---- end to end -------------------------------------------------------------------------------------------------

SMALL = ["experiment=captioner_digit_scenes", "data.train_scenes=64", "data.val_scenes=16",
         "data.test_scenes=16", "model.encoder=lenet5", "model.hidden_dim=64", "model.embed_dim=32", "trainer.max_epochs=3",
         "optimizer.lr=5e-3", "task.num_shown=4"]


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    run_dir = tmp_path_factory.mktemp("captioner")
    return run_dir, train(make_cfg(run_dir, *SMALL, "logger=tensorboard"))


def test_training_lowers_loss_and_logs_captions(caption_run: tuple[Path, dict[str, Any]]):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, result = caption_run
    losses = [row["train/loss"] for row in result["history"]]
    assert losses[-1] < losses[0]
    test = result["test"]
    assert {"loss", "perplexity", "token_acc", "bleu4", "beam_bleu4"} <= set(test)
    assert test["perplexity"] == pytest.approx(np.exp(test["loss"]), rel=1e-5)
    assert "best/val/bleu4" in result
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert state["data_info"]["info"]["vocab"][:4] == list(SPECIALS) and "7" in state["data_info"]["info"]["vocab"]
    assert state["config"]["trainer"]["gradient_clip_val"] == 5.0
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert "val/captions" in acc.Tags()["images"] and any("val/captions" in t for t in acc.Tags()["tensors"])
    assert "val/attention" in acc.Tags()["images"]  # the experiment's decoder attends: where it looked per word


def test_evaluate_writes_captions_and_predict_captions_an_image_file(caption_run: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]):
    from PIL import Image

    from zoo.data.scenes import digit_scenes

    run_dir, _ = caption_run
    ckpt = run_dir / "checkpoints" / "best.pt"
    out = tmp_path / "eval"
    result = evaluate(make_cfg(out, f"ckpt_path={ckpt}", "progress_bar=false", "logger=none", "task.beam_size=1",
                               config_name="evaluate"))
    rows = json.loads((out / "captions_test.json").read_text())
    assert len(rows) == 16 and {"image_id", "caption", "greedy", "beam", "references"} <= set(rows[0])
    assert all(r["beam"] == r["greedy"] for r in rows)  # beam 1 is greedy
    assert result["test"]["beam_bleu4"] == result["test"]["bleu4"]

    data = torch.load(ckpt, weights_only=True)["config"]["data"]
    options = {k: data[k] for k in ("image_size", "min_scale", "max_scale", "gap", "min_digits", "max_digits")}
    scene = digit_scenes(**options, train_scenes=1, val_scenes=1, test_scenes=16, normalize="none").test.scene(3)
    image = tmp_path / "scene.png"
    Image.fromarray((scene["image"].numpy() * 255).round().astype(np.uint8)).save(image)
    capsys.readouterr()
    assert zoo_main(["caption", str(ckpt), str(image), "--decode", "greedy"]) == 0
    assert capsys.readouterr().out.strip() == rows[3]["greedy"]  # the file gives the caption the test split's tensor gave
    assert zoo_main(["caption", str(ckpt), str(tmp_path / "missing.png")]) == 2
    assert capsys.readouterr().err.startswith("error: image file not found")


def test_captioning_needs_a_vocabulary(tmp_path: Path):
    with pytest.raises(ConfigError, match="vocab"):
        train(make_cfg(tmp_path, *SMALL, "logger=none", "data=digit_scenes"))
