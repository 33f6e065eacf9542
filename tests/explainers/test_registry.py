"""The method registry: every method builds through the one factory and explains real images;
settings are checked against the method; the CLI's choices come from the registry."""

import numpy as np
import pytest

from fastfem import sample
from fastfem.cli import build_parser
from fastfem.explainers.registry import METHODS, check_settings, make_explainer, method_named

pytestmark = pytest.mark.skipif(not sample.MODEL_PATH.exists(), reason="no bundled model")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_every_method_builds_and_explains_through_its_record(method):
    x = sample.generate("test", 4).images
    explainer = make_explainer(method.name, str(sample.MODEL_PATH), None, 4, {})
    maps, items, pairs = method.explain_images(explainer, x, None, False)
    assert maps.shape == (4, 64, 64, 1) and np.isfinite(maps).all()
    assert (pairs is not None) == explainer.explains_pairs
    if pairs is not None:  # nearest neighbour among the others, never itself
        assert all(p["reference"] != i for i, p in enumerate(pairs))
    layers = list(explainer.layer_names)
    assert len(layers) > 1 if method.multi_layer else layers == ["last_conv"]


def test_settings_are_the_methods_own():
    fem = method_named("fem")
    assert check_settings(fem, {"k": 3.0, "fusion": None}) == {"k": 3.0, "variant": "xplique"}
    with pytest.raises(ValueError, match="fusion= is only used by method='mlfem'"):
        check_settings(fem, {"fusion": "product"})
    with pytest.raises(ValueError, match="unknown method 'gradcam'"):
        method_named("gradcam")
    with pytest.raises(ValueError, match="explains one layer"):
        make_explainer("fem", str(sample.MODEL_PATH), "conv1,conv2")


def test_cli_method_choices_and_options_come_from_the_registry(capsys):
    parser = build_parser()
    names = [m.name for m in METHODS]
    for verb in ("explain", "evaluate", "audit"):
        with pytest.raises(SystemExit):
            parser.parse_args([verb, "--method", "nope", "--out", "o"])
        err = capsys.readouterr().err
        assert all(n in err for n in names), err
        args = parser.parse_args([verb, "--layer", "a,3", "--fusion", "weighted", "--out", "o"])
        assert args.layer == ["a", 3] and args.fusion == "weighted" and args.fit == "error"
        assert args.k is None  # not given: the method's own default
