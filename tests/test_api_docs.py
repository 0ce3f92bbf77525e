"""The API reference builds from the docstrings, with no broken reference."""

import pathlib
import sys

import keras_rso

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import build_api  # noqa: E402


def test_api_reference_builds_with_every_reference_resolved(tmp_path):
    assert build_api.build(tmp_path) == []
    pages = {p.name for p in (tmp_path / "keras_rso").glob("*.html")}
    assert {"optimizer.html", "model.html", "callbacks.html", "tuning.html"} <= pages
    page = (tmp_path / "keras_rso" / "optimizer.html").read_text()
    assert "weights_per_batch" in page  # the docstrings are in it


def test_a_broken_reference_is_reported(monkeypatch):
    doc = keras_rso.RSO.__doc__ + "\nSee `RSO.no_such_method` and `keras_rso.models.nope()`."
    monkeypatch.setattr(keras_rso.RSO, "__doc__", doc)
    broken = build_api.broken_references(build_api.public_modules())
    assert broken == ["keras_rso.optimizer.RSO: `RSO.no_such_method`",
                      "keras_rso.optimizer.RSO: `keras_rso.models.nope`"]


def test_references_to_other_libraries_are_not_checked():
    roots = {"RSO": keras_rso.RSO}
    assert build_api._resolves("keras.callbacks.NoSuchThing", roots)
    assert build_api._resolves("RSO.get_config", roots)
    assert not build_api._resolves("RSO.nothing", roots)
