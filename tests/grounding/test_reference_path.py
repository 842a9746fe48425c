"""The reference path of a grounding call stays free of the optimisations.

With ``fused_readout=False`` neither driver imports (let alone calls)
ebr_ref.grounding.fused_readout, and a profile of one call enters only the
modules of the reference path: the backend, the kernels (not their ``*_fast``
variants), the models, and the grounding package without the fused read-out.
With ``fused_readout="auto"`` the module is consulted, and with True it folds.
Each check runs in a fresh interpreter, so that no other test has imported
the module before.
"""

import json
import subprocess
import sys
import textwrap

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
    """Every Python function one call enters lies in the backend, the kernels, the models or the grounding
    package without the fused read-out. The kernels' own fast paths (``*_fast`` modules, behind each
    kernel's ``fast`` switch, on by default) are not part of the reference either: a kernel may consult
    the path rule of its fast module (a function that answers True or False) but, on these small maps and
    with ``max(W, 0)`` kept per call (two chunks), no fast path may run."""
    seen = _run("""
        import os
        root = os.path.dirname(ebr_ref.__file__)
        entered, fast_calls, pending = {}, {}, {}

        def rel(path):
            return os.path.relpath(path, os.path.dirname(root)).replace(os.sep, "/")

        def profile(frame, event, arg):
            path = frame.f_code.co_filename
            if not path.startswith(root):
                return
            if event == "call":
                entered.setdefault(rel(path), set()).add(frame.f_code.co_name)
                if path.endswith("_fast.py") and not frame.f_back.f_code.co_filename.endswith("_fast.py"):
                    pending[id(frame)] = f"{rel(path)}::{frame.f_code.co_name}"
            elif event == "return" and id(frame) in pending:  # what a reference kernel got from a fast module
                fast_calls.setdefault(pending.pop(id(frame)), set()).add(type(arg).__name__)

        for call in (lambda: ground(rnn, clip, [0, 1], method="cEB-R", layer="conv1", chunk_size=2,
                                    fused_readout=False),
                     lambda: ground(cnn, clip, 1, method="cEB", layer="input", chunk_size=2,
                                    fused_readout=False),
                     lambda: ground_caption(cap, clip, "red", caption="a red square", layer="conv2",
                                            chunk_size=2, fused_readout=False)):
            sys.setprofile(profile)
            try:
                call()
            finally:
                sys.setprofile(None)
        print(json.dumps({"entered": {k: sorted(v) for k, v in entered.items()},
                          "fast": {k: sorted(v) for k, v in fast_calls.items()}}))
    """)
    entered, fast = seen["entered"], seen["fast"]

    def reference(path):
        top = path.split("/")[1]
        if top in ("backend.py", "models", "layers"):
            return True  # the kernels' *_fast modules: checked below
        return top == "grounding" and not path.endswith("/fused_readout.py")

    assert not [path for path in entered if not reference(path)], sorted(entered)
    assert all(types == ["bool"] for types in fast.values()), fast  # path rules consulted, no fast path run
    for needed in (
        "ebr_ref/grounding/ground.py",
        "ebr_ref/grounding/ground_caption.py",
        "ebr_ref/grounding/frame_cnn.py",
        "ebr_ref/grounding/algorithm.py",
        "ebr_ref/models/stack.py",
        "ebr_ref/layers/conv2d.py",
    ):
        assert needed in entered, needed
    assert {"normalise_by_total", "contrast"} <= set(entered["ebr_ref/grounding/algorithm.py"])
    assert {"eb_to_readout", "forward", "backward"} <= set(entered["ebr_ref/grounding/frame_cnn.py"])
