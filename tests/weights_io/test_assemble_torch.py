"""A PyTorch CNN-LSTM assembled by ``weights_io`` (source ``torch_cnn_lstm``) and ``ebr-ref convert``.

Real torch modules (a torchvision VGG of configuration D with small widths, an
``nn.LSTM``, an ``nn.Linear`` head) in float64 are saved with ``torch.save``
as one state dict, or as a VGG16 state dict plus a state dict of the LSTM and
the head; the converted engine model's logits at every step of a 3-frame clip
equal torch's own forward of the same modules (the CNN on every frame, the LSTM
over the frames from a zero state, the head at every step) to 1e-10 relative.
The torch side uses no engine code. Then the refusals, each naming its problem.
"""

import copy

import numpy
import pytest

import weights_io
from ebr_ref.cli import main
from ebr_ref.models import from_spec, load_model
from weights_io import CheckpointError, convert
from weights_io.assemble_torch import parse_map

torch = pytest.importorskip("torch")
vgg_module = pytest.importorskip("torchvision.models.vgg")

SEED = 0xA55E
T = 3
CFG = [3, 3, "M", 4, 4, "M", 4, 5, 5, "M", 5, 5, 6, "M", 6, 6, 6, "M"]  # VGG16's 13 convs, small widths
FC6, FC7, IMAGENET = 12, 10, 7
H, CLASSES = 4, 5


# --------------------------------------------------------------------------- torch modules (no engine code)


def _init(module):
    """Random weights that keep activations O(1), so the LSTM's gates are not saturated."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1:
                p.normal_(0, 1.0 / p[0].numel() ** 0.5)
            else:
                p.normal_(0, 0.3)
    return module


def _vgg(fc6=FC6, fc7=FC7):
    """torchvision's VGG (configuration D, small widths) with an ImageNet-style classifier (fc6, fc7, fc8).

    Built on the meta device (torchvision's own 25088 x 4096 classifier is replaced before any memory is
    allocated), then given random weights.
    """
    with torch.device("meta"):
        m = vgg_module.VGG(vgg_module.make_layers(CFG), num_classes=IMAGENET, init_weights=False)
        m.classifier[0] = torch.nn.Linear(6 * 49, fc6)
        m.classifier[3] = torch.nn.Linear(fc6, fc7)
        m.classifier[6] = torch.nn.Linear(fc7, IMAGENET)
    return _init(m.to_empty(device="cpu"))


def _trunk(vgg, cut):
    """The VGG up to ``cut`` as a user would keep it: ``classifier[:-1]`` (fc7), ``[:3]`` (fc6), none."""
    keep = {"fc7": 6, "fc6": 3, "pool5": 0}[cut]
    vgg.classifier = vgg.classifier[:keep] if keep else torch.nn.Identity()
    return vgg


class CnnLstm(torch.nn.Module):
    """The user's model: ``head(lstm(cnn(frames)))`` with the time axis first and a batch of one."""

    def __init__(self, cnn, lstm, head, names=("cnn", "lstm", "fc")):
        super().__init__()
        self.names = names
        for name, m in zip(names, (cnn, lstm, head)):
            self.add_module(name, m)

    def forward(self, clip):
        cnn, lstm, head = (getattr(self, n) for n in self.names)
        h, _ = lstm(cnn(clip)[:, None])  # (T, 1, H), zero initial state
        return head(h[:, 0])


def _model(cut="fc7", names=("cnn", "lstm", "fc"), lstm=None, head=None):
    torch.manual_seed(SEED)
    cnn = _trunk(_vgg(), cut)
    D = {"fc7": FC7, "fc6": FC6, "pool5": 6 * 49}[cut]
    m = CnnLstm(cnn, lstm or torch.nn.LSTM(D, H), head or torch.nn.Linear(H, CLASSES), names)
    return _init(m).double().eval()


def _clip():
    return numpy.random.default_rng(SEED).standard_normal((T, 3, 224, 224))


def _torch_logits(forward):
    with torch.no_grad():
        return forward(torch.from_numpy(_clip())).numpy()


def _check(params, meta, want):
    """The engine's logits at every step equal ``want`` (float64, 1e-10 relative)."""
    model = from_spec(meta["architecture"], params, meta)
    assert model.dtype == numpy.float64 and model.is_recurrent
    got = model.logits(_clip())
    assert got.shape == (T, CLASSES)
    assert numpy.linalg.norm(got - want) <= 1e-10 * numpy.linalg.norm(want)
    assert numpy.abs(numpy.diff(want, axis=0)).max() > 1e-3  # the steps differ: the LSTM is exercised
    return model


def _save(obj, path, **kw):
    torch.save(obj, path, **kw)
    return path


# --------------------------------------------------------------------------- the forward equals torch's


@pytest.mark.parametrize("cut", ["fc7", "fc6", "pool5"])
def test_one_file_matches_torch(tmp_path, cut):
    m = _model(cut)
    path = _save(m.state_dict(), tmp_path / "cnn_lstm.pth")
    assert weights_io.detect_source(path) == "torch_cnn_lstm"
    params, meta = convert(path)
    _check(params, meta, _torch_logits(m))
    a = meta["assembly"]
    assert (a["cnn"]["prefix"], a["lstm"]["prefix"], a["head"]["prefix"]) == ("cnn.", "lstm.", "fc.")
    assert a["cut"] == {"layer": cut, "found": "detected", "widths": a["cut"]["widths"]}
    assert meta["source"]["converter"] == "torch_cnn_lstm" and meta["cell_act"] == "tanh"
    assert meta["source_gate_order"] == "ifgo" and meta["gate_order"] == "ifog"
    tail = {"fc7": ["relu7", "drop7"], "fc6": ["relu6", "drop6"], "pool5": ["pool5", "flatten"]}[cut]
    assert [L["name"] for L in meta["architecture"]][-4:] == tail + ["lstm1", "fc8"]
    lstm = next(L for L in meta["architecture"] if L["type"] == "lstm")
    assert lstm["cell_act"] == "tanh" and lstm["hidden"] == H
    assert meta["ignored_weights"] == []


def test_two_files_match_torch(tmp_path):
    """torchvision's full VGG16 state dict (ImageNet classifier included) + an LSTM head trained apart."""
    torch.manual_seed(SEED)
    vgg = _init(_vgg()).double().eval()
    vgg_path = _save(vgg.state_dict(), tmp_path / "vgg16.pth")
    head = _init(
        CnnLstm(torch.nn.Identity(), torch.nn.LSTM(FC7, H), torch.nn.Linear(H, CLASSES), ("x", "rnn", "out"))
    )
    head = head.double().eval()
    head_path = _save(head.state_dict(), tmp_path / "head.pt", _use_new_zipfile_serialization=False)
    want = _torch_logits(lambda x: head(_trunk(vgg, "fc7")(x)))  # the user's forward: classifier[:-1]
    params, meta = convert(vgg_path, lstm=head_path)
    _check(params, meta, want)
    a = meta["assembly"]
    assert (a["cnn"]["file"], a["lstm"]["file"], a["head"]["file"]) == ("vgg16.pth", "head.pt", "head.pt")
    assert (a["cnn"]["prefix"], a["lstm"]["prefix"], a["head"]["prefix"]) == ("", "rnn.", "out.")
    assert a["cut"]["layer"] == "fc7" and a["above_cut"] == ["classifier.6.bias", "classifier.6.weight"]
    assert meta["ignored_weights"] == ["classifier.6.bias", "classifier.6.weight"]
    assert meta["source"]["lstm"]["file"] == "head.pt" and meta["source"]["file"] == "vgg16.pth"
    assert (
        meta["name_map"]["lstm1.W_x"] == "rnn.weight_ih_l0" and meta["name_map"]["fc8.weight"] == "out.weight"
    )


def test_equal_fc_widths_ask_for_the_cut(tmp_path):
    """fc6 and fc7 of the same width (4096 in VGG16): a whole VGG16 beside an LSTM read from fc6 is refused
    with a message asking for --cut, and converts right with it; a CNN cut at fc7 is taken as fed there."""
    torch.manual_seed(SEED)
    vgg = _init(_vgg(fc6=FC7, fc7=FC7)).double().eval()
    vgg_path = _save(vgg.state_dict(), tmp_path / "vgg16.pth")
    head = _init(CnnLstm(torch.nn.Identity(), torch.nn.LSTM(FC7, H), torch.nn.Linear(H, CLASSES)))
    head_path = _save(head.double().eval().state_dict(), tmp_path / "head.pth")
    with pytest.raises(CheckpointError, match=r"ambiguous: fc6 and fc7 .* --cut fc6\|fc7"):
        convert(vgg_path, lstm=head_path)
    whole = copy.deepcopy(vgg)  # _trunk cuts its module in place
    want = _torch_logits(lambda x: head(_trunk(vgg, "fc6")(x)))  # the user's forward reads fc6
    params, meta = convert(vgg_path, lstm=head_path, cut="fc6")
    _check(params, meta, want)
    assert meta["assembly"]["cut"]["found"] == "given"
    one = CnnLstm(_trunk(whole, "fc7"), head.lstm, head.fc)  # classifier[:-1]: the CNN ends at fc7
    params, meta = convert(_save(one.state_dict(), tmp_path / "one.pth"))
    _check(params, meta, _torch_logits(one))
    assert meta["assembly"]["cut"]["layer"] == "fc7" and meta["assembly"]["cut"]["found"] == "detected"


def test_assembly_options_left_unset_do_not_reach_other_converters(tmp_path):
    torch.manual_seed(SEED)
    path = _save(_init(_vgg()).state_dict(), tmp_path / "vgg16.pth")
    params, meta = convert(path, lstm=None, mapping=None, cut=None)
    assert (
        meta["source"]["converter"] == "torchvision_vgg16"
        and "classifier.6.weight" in meta["name_map"].values()
    )


def _wrapped_with_ema(tmp_path):
    """Nonstandard names, under a wrapper, beside an EMA copy: nothing can be detected."""
    m = _model(names=("backbone", "temporal", "classify"))
    sd = m.state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    path = _save({"state_dict": sd, "ema": ema, "epoch": 3}, tmp_path / "wrapped.pth")
    return m, path


def test_map_names_the_parts(tmp_path):
    m, path = _wrapped_with_ema(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"several VGG16-layout CNN.*'ema\.backbone\.'.*--map cnn=PREFIX"
    ):
        convert(path)
    mapping = {"cnn": "state_dict.backbone", "lstm": "state_dict.temporal.", "head": "state_dict.classify"}
    params, meta = convert(path, mapping=mapping)
    _check(params, meta, _torch_logits(m))
    assert meta["assembly"]["lstm"] == {
        "file": "wrapped.pth",
        "prefix": "state_dict.temporal.",
        "found": "mapped",
        "input": FC7,
        "hidden": H,
    }
    assert all(k.startswith("ema.") for k in meta["ignored_weights"])  # outside the model's module: ignored
    assert len(meta["ignored_weights"]) == len(m.state_dict())


def test_mixed_dtypes_give_the_wider_one(tmp_path):
    m = _model()
    sd = {k: (v.float() if k.startswith("cnn.") else v) for k, v in m.state_dict().items()}
    params, meta = convert(_save(sd, tmp_path / "mixed.pth"))
    assert {v.dtype for v in params.values()} == {numpy.dtype("float64")}


# --------------------------------------------------------------------------- refusals name the problem


def _sd(**parts):
    """A state dict from ``prefix=module`` pairs (``fc=Linear(4, 5)``); ``cnn`` is the headless VGG."""
    torch.manual_seed(SEED)
    out = {}
    for prefix, module in parts.items():
        out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return out


def _cnn():
    return _trunk(_vgg(), "fc7")


@pytest.mark.parametrize(
    "parts,pattern",
    [
        (
            lambda: _sd(cnn=_cnn(), fc=torch.nn.Linear(H, CLASSES)),
            r"no lstm found \(no nn\.LSTM: no key ends with 'weight_ih_l0'\).*'cnn\.': a VGG16-layout CNN"
            r".*'fc\.': a linear layer \(4 -> 5\).*"
            r"--map cnn=PREFIX --map lstm=PREFIX --map head=PREFIX",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H)),
            r"no linear head found.*'lstm\.': nn\.LSTM \(input 10, hidden 4\).*--map",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.LSTM(11, H), fc=torch.nn.Linear(H, CLASSES)),
            r"sizes do not chain: the nn\.LSTM 'lstm\.' takes inputs of size 11 but none of the CNN's "
            r"outputs has that size \(pool5 294, fc6 12, fc7 10",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H), fc=torch.nn.Linear(3, CLASSES)),
            r"sizes do not chain: the head 'fc\.' takes 3 inputs.*hidden size 4",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H, bidirectional=True), fc=torch.nn.Linear(8, 5)),
            r"'lstm\.' is bidirectional.*not supported",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H, num_layers=2), fc=torch.nn.Linear(H, 5)),
            r"'lstm\.' has 2 layers \(.*num_layers=2\): not supported",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.LSTM(FC7, 6, proj_size=H), fc=torch.nn.Linear(H, 5)),
            r"has a projection \(weight_hr_l0, proj_size > 0\)",
        ),
        (
            lambda: _sd(cnn=_cnn(), lstm=torch.nn.GRU(FC7, H), fc=torch.nn.Linear(H, 5)),
            r"weight_hh_l0 has shape \(12, 4\), not \(4H, H\) \(an nn\.GRU\?\)",
        ),
        (
            lambda: _sd(
                cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H), a=torch.nn.LSTM(FC7, H), fc=torch.nn.Linear(H, 5)
            ),
            r"several nn\.LSTM.*'a\.', 'lstm\.'.*--map",
        ),
        (
            lambda: _sd(
                cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H), fc=torch.nn.Linear(H, 5), proj=torch.nn.Linear(7, 7)
            ),
            r"tensors that are not part of the CNN-LSTM: proj\.bias, proj\.weight",
        ),
        (
            lambda: {
                **_sd(cnn=_cnn(), lstm=torch.nn.LSTM(FC7, H), fc=torch.nn.Linear(H, 5)),
                "cnn.features.1.running_mean": torch.zeros(3),
            },
            r"unexpected tensors in the CNN 'cnn\.': cnn\.features\.1\.running_mean "
            r"\(BatchNorm keys: vgg16_bn",
        ),
        (
            lambda: {
                **_sd(cnn=_cnn(), fc=torch.nn.Linear(H, 5)),
                "lstm.weight_ih_l0": torch.zeros(()),
                "lstm.weight_hh_l0": torch.zeros(16, 4),
            },
            r"tensor lstm\.weight_ih_l0 \(4H, D\) of the nn\.LSTM at 'lstm\.' is of shape \(\)",
        ),
    ],
    ids=[
        "missing-lstm",
        "missing-head",
        "cnn-lstm-sizes",
        "lstm-head-sizes",
        "bidirectional",
        "num-layers",
        "proj-size",
        "gru",
        "two-lstms",
        "extra-layer",
        "batchnorm",
        "scalar-weight",
    ],
)
def test_refusals_name_the_problem(tmp_path, parts, pattern):
    path = _save(parts(), tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=pattern) as e:
        convert(path, source="torch_cnn_lstm")
    assert str(path) in str(e.value)


def test_refusals_of_the_mapping_and_the_cut(tmp_path):
    path = _save(_model().state_dict(), tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"unknown role\(s\) 'rnn': the roles are cnn, lstm, head"):
        convert(path, mapping={"rnn": "lstm"})
    with pytest.raises(
        CheckpointError,
        match=r"map lstm=nope\.: no tensor name starts with 'nope\.'.*the file holds "
        r"'cnn\.': a VGG16-layout CNN.*'lstm\.': nn\.LSTM \(input 10, hidden 4\); "
        r"'fc\.': a linear layer \(4 -> 5\)",
    ):
        convert(path, mapping={"lstm": "nope"})
    with pytest.raises(CheckpointError, match=r"no nn\.LSTM weights under 'fc\.'"):
        convert(path, mapping={"lstm": "fc"})
    with pytest.raises(CheckpointError, match=r"the lstm prefix 'a\.\.b' is not a module path"):
        convert(path, mapping={"lstm": "a..b"})
    with pytest.raises(
        CheckpointError,
        match=r"the CNN's output at fc6 has 12 features but the nn\.LSTM 'lstm\.' takes inputs of size 10",
    ):
        convert(path, cut="fc6")
    with pytest.raises(CheckpointError, match=r"cut must be one of pool5, fc6, fc7, got 'fc8'"):
        convert(path, cut="fc8")
    with pytest.raises(
        CheckpointError, match=r"lstm only apply to source 'torch_cnn_lstm', not 'torchvision_vgg16'"
    ):
        convert(path, source="torchvision_vgg16", lstm=path)
    for item, pattern in [
        ("lstm:rnn", r"'lstm:rnn' is not ROLE=PREFIX"),
        ("rnn=lstm", r"'rnn=lstm': unknown role 'rnn'; the roles are cnn, lstm, head"),
        ("cnn= a", r"'cnn= a': the cnn prefix ' a' is not a module path"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            parse_map([item])
    with pytest.raises(ValueError, match=r"'lstm=b': the role 'lstm' is given twice"):
        parse_map(["lstm=a", "lstm=b"])
    assert parse_map(["cnn=backbone", "lstm=rnn.", "head="]) == {
        "cnn": "backbone.",
        "lstm": "rnn.",
        "head": "",
    }


# --------------------------------------------------------------------------- ebr-ref convert


def _cli(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_two_files_and_map(tmp_path, capsys):
    torch.manual_seed(SEED)
    vgg = _init(_vgg()).double().eval()
    vgg_path = _save(vgg.state_dict(), tmp_path / "vgg16.pth")
    head = _init(CnnLstm(torch.nn.Identity(), torch.nn.LSTM(FC7, H), torch.nn.Linear(H, CLASSES)))
    head_path = _save(head.double().eval().state_dict(), tmp_path / "head.pth")
    out = tmp_path / "model.npz"
    code, stdout, err = _cli(capsys, vgg_path, "--lstm", head_path, "--out", out)
    assert code == 0, err
    assert (
        "assembled from vgg16.pth (CNN) and head.pth (LSTM, head): CNN (top level) up to fc7 (after relu7)"
        in stdout
    )
    assert "not used: 2 tensors (classifier.6.bias, classifier.6.weight)" in stdout
    want = _torch_logits(lambda x: head(_trunk(vgg, "fc7")(x)))
    got = load_model(out).logits(_clip())
    assert numpy.linalg.norm(got - want) <= 1e-10 * numpy.linalg.norm(want)

    m, wrapped = _wrapped_with_ema(tmp_path)
    out = tmp_path / "mapped.npz"
    argv = [wrapped, "--out", out, "--map", "cnn=state_dict.backbone", "--map", "lstm=state_dict.temporal"]
    code, stdout, err = _cli(capsys, *argv, "--map", "head=state_dict.classify", "--cut", "fc7")
    assert code == 0, err
    assert "detected: " not in stdout
    got = load_model(out).logits(_clip())
    want = _torch_logits(m)
    assert numpy.linalg.norm(got - want) <= 1e-10 * numpy.linalg.norm(want)


def test_cli_errors(tmp_path, capsys):
    path = _save(_model().state_dict(), tmp_path / "m.pth")
    out = tmp_path / "x.npz"
    cases = [
        (["--map", "lstm"], "--map 'lstm' is not ROLE=PREFIX"),
        (["--map", "rnn=lstm"], "--map 'rnn=lstm': unknown role 'rnn'"),
        (["--map", "lstm=nope"], "map lstm=nope.: no tensor name starts with 'nope.'"),
        (["--lstm", tmp_path / "missing.pth"], "--lstm"),
        (["--cut", "fc6"], "sizes do not chain"),
        (["--map", "lstm=lstm", "--source", "onnx"], "--map: only with --source torch_cnn_lstm, not 'onnx'"),
        (["--lstm", path, "--prototxt", path], "--prototxt is for a Caffe checkpoint"),
    ]
    for extra, needle in cases:
        code, stdout, err = _cli(capsys, path, "--out", out, *extra)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not out.exists()
    alone = _save(_sd(rnn=torch.nn.LSTM(FC7, H), out=torch.nn.Linear(H, CLASSES)), tmp_path / "head.pth")
    code, stdout, err = _cli(capsys, alone, "--out", out)
    assert code == 2 and "holds an nn.LSTM without a CNN" in err, err
    assert f"ebr-ref convert vgg16.pth --lstm {alone} --out {out}" in err


def test_cli_help_describes_the_layouts(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    for needle in (
        "<cnn>features.N.*, <cnn>classifier.N.*",
        "<lstm>weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0",
        "<head>weight, <head>bias",
        "ebr-ref convert vgg16.pth --lstm head.pth --out model.npz",
        "--map cnn=backbone --map lstm=rnn --map head=fc",
        "--cut pool5|fc6|fc7",
    ):
        assert needle in text, needle
