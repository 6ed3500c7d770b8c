"""load_pretrained and the key adaptation behind it: real torch models and checkpoints."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import asyncfetch
from asyncfetch import CheckpointMismatch, LoadReport
from asyncfetch._hub.adapt import plan, prefix_hint, strip, unwrap
from tests.faultserver import FaultServer

pytestmark = pytest.mark.torch


class Net(torch.nn.Module):
    """A small classifier: a conv trunk and a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, classes)


def trained(classes: int = 10, seed: int = 1) -> Net:
    torch.manual_seed(seed)
    net = Net(classes)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)  # differ from any fresh init
        net.bn.running_mean.add_(0.5)
    return net


def fresh(classes: int = 10) -> Net:
    torch.manual_seed(99)
    return Net(classes)


def serve(server: FaultServer, name: str, checkpoint: Any) -> str:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return server.add_file(name, buffer.getvalue())


def assert_loaded(model: torch.nn.Module, source: torch.nn.Module, keys: list[str]) -> None:
    got, want = model.state_dict(), source.state_dict()
    for key in keys:
        assert torch.equal(got[key].cpu(), want[key].cpu()), key  # DataParallel moves to a GPU


ALL_KEYS = list(Net().state_dict())


# wrappers and prefixes ----------------------------------------------------------------------


def test_ddp_style_module_prefix_is_stripped(server: FaultServer, tmp_path: Path) -> None:
    source = trained()
    url = serve(server, "ddp.pth", torch.nn.DataParallel(source).state_dict())
    model = fresh()

    report = asyncfetch.load_pretrained(model, url, model_dir=str(tmp_path), progress=False)

    assert sorted(report.loaded) == sorted(ALL_KEYS)
    assert report.ok
    assert_loaded(model, source, ALL_KEYS)


def test_torch_compile_orig_mod_prefix_is_stripped(server: FaultServer, tmp_path: Path) -> None:
    source = trained()
    with warnings.catch_warnings():
        # importing inductor warns about torch.jit internals, which are not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        compiled = torch.compile(source)  # state dict says _orig_mod.*; nothing is compiled
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    url = serve(server, "compiled.pth", compiled.state_dict())
    model = fresh()

    report = asyncfetch.load_pretrained(model, url, model_dir=str(tmp_path), progress=False)

    assert report.ok
    assert_loaded(model, source, ALL_KEYS)


def test_both_prefixes_at_once(server: FaultServer, tmp_path: Path) -> None:
    source = trained()
    state = {f"_orig_mod.module.{k}": v for k, v in source.state_dict().items()}
    url = serve(server, "both.pth", state)
    model = fresh()
    report = asyncfetch.load_pretrained(model, url, model_dir=str(tmp_path), progress=False)
    assert report.ok
    assert_loaded(model, source, ALL_KEYS)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_ema", "state_dict_ema"])
def test_weights_are_picked_out_of_wrappers(
    server: FaultServer, tmp_path: Path, wrapper: str
) -> None:
    source = trained()
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {"epoch": 7, wrapper: source.state_dict(), "optimizer": optimizer.state_dict()}
    url = serve(server, f"{wrapper}.pth", checkpoint)
    model = fresh()

    report = asyncfetch.load_pretrained(model, url, model_dir=str(tmp_path), progress=False)

    assert report.ok
    assert_loaded(model, source, ALL_KEYS)


def test_checkpoint_key_picks_the_ema_weights(server: FaultServer, tmp_path: Path) -> None:
    plain, ema = trained(seed=1), trained(seed=2)
    checkpoint = {"state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict()}
    url = serve(server, "ema.pth", checkpoint)
    model = fresh()

    asyncfetch.load_pretrained(
        model, url, checkpoint_key="state_dict_ema", model_dir=str(tmp_path), progress=False
    )

    assert_loaded(model, ema, ALL_KEYS)


def test_a_pickled_module_under_model_is_used(server: FaultServer, tmp_path: Path) -> None:
    source = trained()
    url = serve(server, "module.pth", {"model": source, "epoch": 3})
    model = fresh()
    report = asyncfetch.load_pretrained(
        model, url, weights_only=False, model_dir=str(tmp_path), progress=False
    )
    assert report.ok
    assert_loaded(model, source, ALL_KEYS)


# partial loads ------------------------------------------------------------------------------


def test_a_changed_head_is_skipped_and_reported(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = trained(classes=1000)
    url = serve(server, "imagenet.pth", source.state_dict())
    model = fresh(classes=10)
    head_before = model.fc.weight.detach().clone()

    with caplog.at_level(logging.WARNING, logger="asyncfetch"):
        report = asyncfetch.load_pretrained(model, url, model_dir=str(tmp_path), progress=False)

    trunk = [k for k in ALL_KEYS if not k.startswith("fc.")]
    assert sorted(report.loaded) == sorted(trunk)
    assert report.mismatched_shapes == {
        "fc.weight": ((1000, 4), (10, 4)),
        "fc.bias": ((1000,), (10,)),
    }
    assert report.missing == ()
    assert report.unexpected == ()
    assert not report.ok
    assert_loaded(model, source, trunk)
    assert torch.equal(model.fc.weight, head_before)  # the head kept its own values
    assert "fc.weight: checkpoint (1000, 4) vs model (10, 4)" in caplog.text
    assert f"loaded      {len(trunk)} of {len(ALL_KEYS)} model keys" in caplog.text


def test_strict_raises_on_a_changed_head(server: FaultServer, tmp_path: Path) -> None:
    url = serve(server, "imagenet.pth", trained(classes=1000).state_dict())
    model = fresh(classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(CheckpointMismatch, match="strict loading failed") as caught:
        asyncfetch.load_pretrained(model, url, strict=True, model_dir=str(tmp_path), progress=False)

    assert isinstance(caught.value.report, LoadReport)
    assert "fc.bias" in caught.value.report.mismatched_shapes
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # untouched


def test_ignore_keys_drop_the_head_even_when_strict(server: FaultServer, tmp_path: Path) -> None:
    source = trained(classes=1000)
    url = serve(server, "imagenet.pth", source.state_dict())
    model = fresh(classes=10)

    report = asyncfetch.load_pretrained(
        model, url, strict=True, ignore_keys=("fc.*",), model_dir=str(tmp_path), progress=False
    )

    assert report.ok
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert report.mismatched_shapes == {}


def test_an_ignored_model_key_is_counted_and_reported_left_as_is(
    server: FaultServer, tmp_path: Path
) -> None:
    torch.manual_seed(3)
    url = serve(server, "fc.pth", torch.nn.Linear(2, 2).state_dict())
    model = torch.nn.Linear(2, 2)
    init_bias = model.bias.detach().clone()

    report = asyncfetch.load_pretrained(
        model, url, ignore_keys=["bias"], model_dir=str(tmp_path), progress=False
    )

    assert report.loaded == ("weight",)
    assert report.left_as_is == ("bias",)  # not loaded: it keeps its init
    assert torch.equal(model.bias, init_bias)
    summary = report.summary()
    assert "loaded      1 of 2 model keys" in summary
    assert "left as is  1: bias (ignored: not loaded, they keep their current values)" in summary
    assert report.ok  # ignoring was asked for


def test_missing_and_unexpected_keys_are_reported(server: FaultServer, tmp_path: Path) -> None:
    state = trained().state_dict()
    del state["bn.running_var"]
    state["extra.weight"] = torch.zeros(2)
    url = serve(server, "partial.pth", state)

    report = asyncfetch.load_pretrained(fresh(), url, model_dir=str(tmp_path), progress=False)

    assert report.missing == ("bn.running_var",)
    assert report.unexpected == ("extra.weight",)
    assert "missing     1: bn.running_var" in report.summary()


# nothing matches ----------------------------------------------------------------------------


def test_nothing_matching_raises_with_a_prefix_hint(server: FaultServer, tmp_path: Path) -> None:
    state = {f"encoder.{k}": v for k, v in trained().state_dict().items()}
    url = serve(server, "encoder.pth", state)

    with pytest.raises(CheckpointMismatch, match="carry prefix 'encoder.'") as caught:
        asyncfetch.load_pretrained(fresh(), url, model_dir=str(tmp_path), progress=False)

    assert "strip_prefixes=('encoder.',)" in str(caught.value)
    assert url in str(caught.value)


def test_a_model_with_no_matching_keys_raises(server: FaultServer, tmp_path: Path) -> None:
    url = serve(server, "other.pth", torch.nn.LSTM(3, 4).state_dict())
    with pytest.raises(CheckpointMismatch, match="share no names"):
        asyncfetch.load_pretrained(fresh(), url, model_dir=str(tmp_path), progress=False)


def test_the_hint_that_goes_the_other_way() -> None:
    hint = prefix_hint(["conv.weight", "fc.bias"], ["backbone.conv.weight", "backbone.fc.bias"])
    assert "model's keys carry prefix 'backbone.'" in hint
    assert "model.backbone" in hint


def test_same_names_all_wrong_shapes_says_so() -> None:
    state = {"w": torch.zeros(3)}
    with pytest.raises(CheckpointMismatch, match="all differ in shape"):
        plan(state, {"w": (4,)})


# local files and registry names -------------------------------------------------------------


def test_a_local_path_loads_without_a_server(tmp_path: Path) -> None:
    source = trained()
    path = tmp_path / "local.pth"
    torch.save(source.state_dict(), path)
    model = fresh()
    assert asyncfetch.load_pretrained(model, path).ok
    assert_loaded(model, source, ALL_KEYS)


def test_a_registry_name_as_source(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = trained()
    url = serve(server, "tiny-net.pth", source.state_dict())
    registry = tmp_path / "models.toml"
    registry.write_text(f'[tiny-net]\nurl = "{url}"\n')
    monkeypatch.setenv("ASYNCFETCH_REGISTRY", str(registry))
    model = fresh()

    report = asyncfetch.load_pretrained(model, "tiny-net", model_dir=str(tmp_path / "c"))

    assert report.ok
    assert report.source == url
    assert_loaded(model, source, ALL_KEYS)


# pure logic ---------------------------------------------------------------------------------


def test_unwrap_without_weights_lists_the_keys() -> None:
    with pytest.raises(CheckpointMismatch, match="keys 2: epoch, optimizer"):
        unwrap({"epoch": 1, "optimizer": {"state": {}}}, source="x.pth")


def test_unwrap_with_a_wrong_checkpoint_key() -> None:
    with pytest.raises(CheckpointMismatch, match="no state dict under 'ema'"):
        unwrap({"state_dict": {"w": torch.zeros(1)}}, "ema")


def test_summary_lists_a_few_and_counts_the_rest() -> None:
    report = LoadReport(loaded=(), missing=tuple(f"k{i}" for i in range(20)), unexpected=())
    assert "missing     20: k0, k1, k2, k3, k4, k5, k6, k7, ... and 12 more" in report.summary()


_PREFIXES = ("module.", "_orig_mod.")
_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,3}", fullmatch=True)


@given(name=_names, wrappers=st.lists(st.sampled_from(_PREFIXES), max_size=4))
def test_strip_removes_any_stack_of_prefixes(name: str, wrappers: list[str]) -> None:
    assert strip("".join(wrappers) + name, _PREFIXES) == name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("map_location", ["cpu", "cuda:0"])
def test_a_model_on_the_gpu_gets_the_weights(
    server: FaultServer, tmp_path: Path, map_location: str
) -> None:
    source = trained()
    url = serve(server, "gpu.pth", {"state_dict": source.state_dict()})
    model = fresh().cuda()
    report = asyncfetch.load_pretrained(
        model, url, map_location=map_location, model_dir=str(tmp_path), progress=False
    )
    assert sorted(report.loaded) == sorted(ALL_KEYS)
    assert all(t.device == torch.device("cuda:0") for t in model.state_dict().values())
    assert_loaded(model, source, ALL_KEYS)
