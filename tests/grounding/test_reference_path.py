"""The reference path of a grounding call stays free of the optimisations.

With ``fused_readout=False`` neither driver imports (let alone calls)
ebr_ref.grounding.fused_readout; with ``fast_kernels=False`` as well, a profile
of one call enters only the modules of the reference path: the backend, the
kernels (not their ``*_fast`` variants), the models, and the grounding package
without the fused read-out. With ``fused_readout="auto"`` the module is
consulted, and with True it folds. Those checks run in a fresh interpreter, so
that no other test has imported the module before. The kernels' switch changes
no result beyond rounding, and takes only True or False.
"""

import json
import subprocess
import sys
import textwrap

import numpy
import pytest

from ebr_ref.grounding.ground import ground
from ebr_ref.grounding.ground_caption import ground_caption
from ebr_ref.models import sequential
from ebr_ref.models.caption import captioner
from tests.paths import REPO

SETUP = textwrap.dedent("""
    import json, sys
    import numpy
    import ebr_ref
    from ebr_ref.grounding.ground import ground
    from ebr_ref.grounding.ground_caption import ground_caption
    from ebr_ref.models import sequential
    from ebr_ref.models.caption import captioner

    BLOCK = [("conv1", "conv", {"out_channels": 3, "kernel": 3, "padding": 1}), ("relu1", "relu"),
             ("conv2", "conv", {"out_channels": 4, "kernel": 3, "padding": 1}), ("relu2", "relu"),
             ("pool2", "maxpool", {"kernel": 2}), ("flat", "flatten"), ("fc7", "fc", {"out_features": 6}),
             ("relu7", "relu")]
    rnn = sequential(BLOCK + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})],
                     (2, 6, 6), seed=1)
    cnn = sequential(BLOCK + [("fc8", "fc", {"out_features": 5})], (2, 6, 6), seed=2)
    cap = captioner(BLOCK, ["a", "red", "square"], (2, 6, 6), embed=3, hidden=(4, 5), seed=3)
    clip = numpy.random.default_rng(4).uniform(0, 1, (3, 2, 6, 6))
    FUSED = "ebr_ref.grounding.fused_readout"
""")


def _run(code):
    """Run ``SETUP + code`` in a fresh interpreter; return the JSON it prints last."""
    out = subprocess.run(
        [sys.executable, "-c", SETUP + textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_switch_off_never_imports_the_fused_readout():
    seen = _run("""
        seen = {"after import": FUSED in sys.modules}
        for method in ("cEB-R", "EB-R", "BP-R"):
            ground(rnn, clip, [0, 1, 2, 3, 4], method=method, layer="conv1", fused_readout=False)
        for method in ("cEB", "EB", "BP"):
            ground(cnn, clip, [0, 1, 2, 3, 4], method=method, layer="conv1", fused_readout=False)
        ground_caption(cap, clip, ["a", "red", "square"], caption="a red square", layer="conv1",
                       fused_readout=False)
        seen["after calls"] = FUSED in sys.modules
        print(json.dumps(seen))
    """)
    assert seen == {"after import": False, "after calls": False}


def test_switch_on_uses_the_fused_readout():
    seen = _run("""
        g = ground(rnn, clip, 0, method="cEB-R", layer="conv1", fused_readout="auto")
        seen = {"auto consults": FUSED in sys.modules}
        g = ground(rnn, clip, [0, 1, 2], method="cEB-R", layer="conv1", fused_readout=True)
        seen["True folds"] = g.diagnostics["fused_readout"]
        print(json.dumps(seen))
    """)
    assert seen == {"auto consults": True, "True folds": ["relu1", "conv2", "relu2", "pool2"]}


def test_a_reference_call_enters_only_reference_modules():
    """With both switches off (``fused_readout=False, fast_kernels=False``) every Python function one call
    enters lies in the backend, the reference kernels, the models or the grounding package without the
    fused read-out: no ``*_fast`` module is entered, not even for a path rule. The calls use several
    chunks and several targets, where the fast modules are otherwise entered (checked below with the
    switch on)."""
    seen = _run("""
        import os
        root = os.path.dirname(ebr_ref.__file__)

        def rel(path):
            return os.path.relpath(path, os.path.dirname(root)).replace(os.sep, "/")

        def calls(fast_kernels):
            entered = {}

            def profile(frame, event, arg):
                path = frame.f_code.co_filename
                if event == "call" and path.startswith(root):
                    entered.setdefault(rel(path), set()).add(frame.f_code.co_name)

            for call in (
                lambda: ground(rnn, clip, [0, 1], method="cEB-R", layer="conv1", chunk_size=2,
                               fused_readout=False, fast_kernels=fast_kernels),
                lambda: ground(rnn, clip, 3, method="BP-R", layer="conv1", chunk_size=3,
                               fused_readout=False, fast_kernels=fast_kernels),
                lambda: ground(cnn, clip, 1, method="cEB", layer="input", chunk_size=3,
                               fused_readout=False, fast_kernels=fast_kernels),
                lambda: ground_caption(cap, clip, "red", caption="a red square", layer="conv2",
                                       chunk_size=3, fused_readout=False, fast_kernels=fast_kernels)):
                sys.setprofile(profile)
                try:
                    call()
                finally:
                    sys.setprofile(None)
            return {k: sorted(v) for k, v in entered.items()}

        print(json.dumps({"reference": calls(False), "fast": calls(True)}))
    """)
    entered, with_fast = seen["reference"], seen["fast"]

    def reference(path):
        top = path.split("/")[1]
        if path.endswith("_fast.py"):
            return False
        if top in ("backend.py", "models", "layers"):
            return True
        return top == "grounding" and not path.endswith("/fused_readout.py")

    assert not [path for path in entered if not reference(path)], sorted(entered)
    for needed in (
        "ebr_ref/grounding/ground.py",
        "ebr_ref/grounding/ground_caption.py",
        "ebr_ref/grounding/frame_cnn.py",
        "ebr_ref/grounding/algorithm.py",
        "ebr_ref/models/stack.py",
        "ebr_ref/layers/conv2d.py",
        "ebr_ref/layers/linear.py",
    ):
        assert needed in entered, needed
    assert {"normalise_by_total", "contrast"} <= set(entered["ebr_ref/grounding/algorithm.py"])
    assert {"eb_to_readout", "forward", "backward"} <= set(entered["ebr_ref/grounding/frame_cnn.py"])
    # The same calls with the kernels' switch on enter both fast modules (conv2d_fast's path rule,
    # linear_fast's blocked EB): the check above can fail.
    assert {"ebr_ref/layers/conv2d_fast.py", "ebr_ref/layers/linear_fast.py"} <= set(with_fast)


def _models():
    block = [
        ("conv1", "conv", {"out_channels": 5, "kernel": 3, "padding": 1}),
        ("relu1", "relu"),
        ("conv2", "conv", {"out_channels": 6, "kernel": 3, "padding": 1}),
        ("relu2", "relu"),
        ("pool2", "maxpool", {"kernel": 2}),
        ("flat", "flatten"),
        ("fc7", "fc", {"out_features": 9}),
        ("relu7", "relu"),
    ]
    rnn = sequential(
        block + [("lstm1", "lstm", {"hidden": 4}), ("fc8", "fc", {"out_features": 5})], (3, 8, 8), seed=5
    )
    cnn = sequential(block + [("fc8", "fc", {"out_features": 5})], (3, 8, 8), seed=6)
    cap = captioner(block, ["a", "red", "square"], (3, 8, 8), embed=3, hidden=(4, 5), seed=7)
    clip = numpy.random.default_rng(8).uniform(-1, 1, (5, 3, 8, 8))
    return rnn, cnn, cap, clip


@pytest.mark.parametrize(
    "method", ["cEB-R", "EB-R", "BP-R", "cEB", "EB", "BP", "caption cEB-R", "caption BP-R"]
)
def test_the_kernel_switch_changes_no_result(method):
    rnn, cnn, cap, clip = _models()

    def run(fast_kernels):
        kw = dict(layer="conv1", chunk_size=2, fused_readout=False, fast_kernels=fast_kernels)
        if method.startswith("caption"):
            return ground_caption(
                cap, clip, ["red", "square"], caption="a red square", method=method[8:], **kw
            )
        model = rnn if method.endswith("-R") else cnn
        return ground(model, clip, [0, 2, 4], method=method, **kw)

    ref, fast = run(False), run(True)
    scale = numpy.abs(ref.maps).max()
    assert scale > 0
    numpy.testing.assert_allclose(fast.maps, ref.maps, rtol=0, atol=1e-12 * scale)
    numpy.testing.assert_allclose(
        fast.evidence, ref.evidence, rtol=1e-12, atol=1e-12 * numpy.abs(ref.evidence).max()
    )


@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_the_kernel_switch_takes_only_a_bool(bad):
    rnn, cnn, cap, clip = _models()
    with pytest.raises(ValueError, match="fast_kernels must be True or False"):
        ground(rnn, clip, 0, layer="conv1", fast_kernels=bad)
    with pytest.raises(ValueError, match="fast_kernels must be True or False"):
        ground_caption(cap, clip, "red", caption="a red square", layer="conv1", fast_kernels=bad)
