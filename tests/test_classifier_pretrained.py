"""`--pretrained FILE`: the classifier's backbones start from a local timm file (strict checks, offline); the
detector stage hands its ultralytics .pt to detector.train. Every checkpoint here is written by the test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from classifier.config import ClassifierConfig
from classifier.data import build_dataset
from classifier.model import GradeNet
from classifier.predict import CONFIG_FILE, WEIGHTS_FILE
from classifier.pretrained import PretrainedError, load_pretrained, read_state_dict
from classifier.train import train
from common.files import sha256_of
from synth.generate import builtin_specs, generate

TOY = dict(epochs=1, batch_patients=3, threads=1, backbone_channels=[8, 16, 16, 32], stem_width=8,
           hidden_dim=16, level_embedding_dim=4, sag_size=32, ax_size=32, patience=5, val_fraction=0.25)


def timm_backbone(cfg: ClassifierConfig, seed: int = 7, channels=None, **kw) -> torch.nn.Module:
    """A timm network of the config's architecture with an ImageNet-style 3-channel stem and a 1000-class head,
    random weights of its own (as a downloaded file would differ from the classifier's initialisation)."""
    torch.manual_seed(seed)
    return timm.create_model(cfg.sag_backbone, pretrained=False, in_chans=3, num_classes=1000,
                             channels=tuple(channels or cfg.backbone_channels), stem_width=cfg.stem_width, **kw)


@pytest.fixture
def cfg() -> ClassifierConfig:
    return ClassifierConfig.from_dict(TOY)


def test_a_timm_state_dict_starts_both_backbones(cfg, tmp_path):
    src = timm_backbone(cfg)
    path = tmp_path / "resnet10t_imagenet.pth"
    torch.save(src.state_dict(), path)
    model = GradeNet(cfg)
    record = load_pretrained(model, path)
    ref = src.state_dict()
    for k, v in model.sagittal.state_dict().items():
        torch.testing.assert_close(v, ref[k])
    stem = "conv1.0.weight"
    torch.testing.assert_close(model.axial.state_dict()[stem], ref[stem].sum(dim=1, keepdim=True))  # 3 -> 1 channel
    for k, v in model.axial.state_dict().items():
        if k != stem:
            torch.testing.assert_close(v, ref[k])
    assert record["file"] == path.name and record["sha256"] == sha256_of(path)
    assert record["backbones"]["sagittal"]["head_keys_dropped"] == ["fc.bias", "fc.weight"]
    assert record["backbones"]["axial"]["input_channels_adapted"] == [stem]
    assert record["backbones"]["sagittal"]["input_channels_adapted"] == []


@pytest.mark.parametrize("wrap", ["state_dict", "model", "state_dict_ema", "module."])
def test_training_checkpoints_are_read(cfg, tmp_path, wrap):
    sd = timm_backbone(cfg).state_dict()
    obj = {f"module.{k}": v for k, v in sd.items()} if wrap == "module." else {wrap: sd, "epoch": 3}
    torch.save(obj, tmp_path / "ckpt.pth.tar")
    got = read_state_dict(tmp_path / "ckpt.pth.tar")
    assert set(got) == set(sd)


def test_a_shape_mismatch_is_refused_naming_the_file_and_the_key(cfg, tmp_path):
    path = tmp_path / "wide_resnet10t.pth"
    torch.save(timm_backbone(cfg, channels=[8, 16, 16, 64]).state_dict(), path)   # a wider last stage
    with pytest.raises(PretrainedError) as e:
        load_pretrained(GradeNet(cfg), path)
    msg = str(e.value)
    assert "wide_resnet10t.pth" in msg and "shape mismatch" in msg and "layer4.0." in msg and "(64, 16, 3, 3)" in msg
    assert "backbone_channels" in msg


def test_missing_and_unexpected_keys_are_listed(cfg, tmp_path):
    sd = timm_backbone(cfg).state_dict()
    sd.pop("layer4.0.conv2.weight")
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(PretrainedError) as e:
        load_pretrained(GradeNet(cfg), path)
    msg = str(e.value)
    assert "odd.pth" in msg and "missing 1 key" in msg and "layer4.0.conv2.weight" in msg
    assert "unexpected 1 key" in msg and "extra.weight" in msg


def test_another_architecture_and_unreadable_files_are_refused(cfg, tmp_path):
    torch.save(timm.create_model("mobilenetv3_small_050", pretrained=False).state_dict(), tmp_path / "mnv3.pth")
    with pytest.raises(PretrainedError, match="mnv3.pth.*does not fit the sagittal backbone"):
        load_pretrained(GradeNet(cfg), tmp_path / "mnv3.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="junk.pth"):
        load_pretrained(GradeNet(cfg), tmp_path / "junk.pth")
    torch.save({"epoch": 1, "note": "no tensors"}, tmp_path / "empty.pth")
    with pytest.raises(PretrainedError, match="no state dict"):
        load_pretrained(GradeNet(cfg), tmp_path / "empty.pth")


def test_training_from_a_pretrained_file_records_it_on_the_card(cfg, tmp_path):
    data = tmp_path / "ph"
    generate(data, builtin_specs(4, 51), 51, "built-in statistical model", workers=1)
    path = tmp_path / "backbone.pth"
    torch.save(timm_backbone(cfg).state_dict(), path)
    from classifier.recipe import ClassifierRun, run_classifier
    out = tmp_path / "w"
    run_classifier(ClassifierRun((data,), out, "toy", overrides=TOY, pretrained=path, command="test"),
                   log=lambda s: None)
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["training"]["pretrained"]["sha256"] == sha256_of(path)
    card = (out / "MODEL_CARD.md").read_text()
    assert f"`{path.name}`" in card and sha256_of(path) in card
    # without the file the card says the backbones started from random weights
    out2 = tmp_path / "w2"
    train(build_dataset(data), out2, cfg, log=lambda s: None)
    from classifier.card import model_card_text
    assert "random weights" in model_card_text(json.loads((out2 / CONFIG_FILE).read_text()))
    assert (out2 / WEIGHTS_FILE).is_file()


def test_train_pretrained_reaches_each_stage(monkeypatch, tmp_path):
    """`train detector --pretrained X.pt` hands X.pt to detector.train (its card records name and sha256);
    `train all` needs STAGE=FILE; a file for the wrong stage is refused."""
    from click.testing import CliRunner

    import detector.train as dtrain
    from pipeline import cli
    from release.training import TrainingRun, parse_pretrained, train_stages
    from study.errors import InputError
    data = tmp_path / "ph"
    generate(data, builtin_specs(2, 52), 52, "built-in statistical model", workers=1)
    pt = tmp_path / "yolo_start.pt"
    pt.write_bytes(b"an ultralytics checkpoint stands here")
    seen = {}

    def fake_train(*args, **kw):
        seen.update(kw)
        raise RuntimeError("stop after the hand-off")
    monkeypatch.setattr(dtrain, "train", fake_train)
    with pytest.raises(RuntimeError, match="hand-off"):
        train_stages(TrainingRun("detector", (data,), tmp_path / "w", pretrained=parse_pretrained("detector", [str(pt)])))
    assert Path(seen["init_weights"]) == pt
    assert parse_pretrained("all", [f"classifier={pt}", f"detector={pt}"]) == (("classifier", pt), ("detector", pt))
    with pytest.raises(InputError, match="name the stage"):
        parse_pretrained("all", [str(pt)])
    res = CliRunner().invoke(cli, ["train", "fusion", "--data", str(data), "--out", str(tmp_path / "w2"),
                                   "--pretrained", f"detector={pt}"])
    assert res.exit_code == 2 and "does not fit `train fusion`" in res.output
