"""The trained classifier: learns page types, calibrated, stored as JSON versions, refused on bad data."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from sohoa_dev import synth

from sohoa.domain import model
from sohoa.domain.catalog import taxonomy
from sohoa.steps import classify
from sohoa.storage import ObjectExists, open_store


def _noisy(text: str, rng: random.Random) -> str:
    """OCR-like damage: lost tone marks, swapped letters, dropped characters."""
    out = []
    for ch in text:
        roll = rng.random()
        if roll < 0.03:
            continue
        if roll < 0.06:
            out.append(rng.choice("ilo0e"))
        else:
            out.append(ch)
    return "".join(out)


def _examples(seeds: range) -> list[model.Example]:
    rng = random.Random(7)
    examples = []
    for seed in seeds:
        procedure = sorted(synth.PROCEDURES)[seed % 3]
        truth, _ = synth.build_layout(procedure, seed)
        examples += [model.Example(text=_noisy(page.text, rng), label=page.doc_type, dossier=f"d{seed}")
                     for page in truth.pages]
    return examples


@pytest.fixture(scope="module")
def trained() -> model.ClassifierModel:
    return model.train(_examples(range(12)), version=1, taxonomy_digest="t")


def test_it_types_pages_of_dossiers_it_never_saw(trained):
    test = _examples(range(100, 109))
    predictions = trained.predict([e.text for e in test])
    right = sum(max(p, key=p.__getitem__) == e.label for p, e in zip(predictions, test))
    assert right / len(test) >= 0.95
    assert all(abs(sum(p.values()) - 1) < 1e-6 for p in predictions)
    assert trained.summary.cv_accuracy >= 0.9 and trained.summary.dossiers == 12


def test_its_confidence_is_humble_on_small_data():
    small = model.train(_examples(range(8)), version=1, taxonomy_digest="t")
    top = [max(p.values()) for p in small.predict([e.text for e in _examples(range(200, 203))])]
    assert max(top) < 0.999  # label smoothing keeps a small, error-free training set from claiming certainty
    assert small.temperature > 0.1


def test_too_little_data_is_refused_and_rare_types_are_left_out():
    with pytest.raises(model.TooLittleData):
        model.train(_examples(range(2)), version=1, taxonomy_digest="t")
    examples = _examples(range(12)) + [model.Example(text="GIẤY ỦY QUYỀN", label="giay_uy_quyen", dossier="x")]
    trained = model.train(examples, version=1, taxonomy_digest="t")
    assert "giay_uy_quyen" not in trained.classes and trained.summary.left_out == {"giay_uy_quyen": 1}


def test_versions_are_stored_as_json_and_chosen_by_setting(tmp_path, trained):
    store = open_store(str(tmp_path / "archive"))
    store.ensure_ready()
    assert model.newest(store) is None and model.choose(store, "auto") is None
    first = model.save(store, trained)
    second = model.save(store, trained.model_copy(update={"version": 2}))
    assert json.loads(gzip.decompress(store.get_bytes(first.key)))["schema"] == model.SCHEMA  # no pickle: plain JSON
    assert model.newest(store) == second and model.choose(store, "1") == first and model.choose(store, "rules") is None
    with pytest.raises(ValueError, match="no classifier version 7"):
        model.choose(store, "7")
    with pytest.raises(ObjectExists):  # a version, once written, never changes
        model.save(store, trained)
    loaded = model.load(store, second)
    assert loaded.predict(["GIẤY CHỨNG SINH"]) == trained.predict(["GIẤY CHỨNG SINH"])
    tampered = second.model_copy(update={"digest": "0" * 64})
    with pytest.raises(ValueError, match="checksum"):
        model.load(store, tampered)


def test_a_new_model_changes_the_classify_key_and_nothing_before_it(settings, trained, tmp_path):
    store = open_store(str(tmp_path / "models"))
    store.ensure_ready()
    ref = model.save(store, trained)
    assert classify.classify_key("ocr-x", settings, None, ref) != classify.classify_key("ocr-x", settings, None, None)


def test_the_model_types_an_untitled_page_the_rules_cannot(trained):
    # the lease's second sheet has no title, header or number: rules alone can only continue the document before it
    truth, _ = synth.build_layout("1.001612", 300)
    lease_2 = next(p.text for p in truth.pages if p.doc_type == "hop_dong" and not p.starts_document)
    pages = [(1, "GIẤY CHỨNG SINH\nHọ và tên mẹ", False), (2, "", True), (3, lease_2, False)]
    with_rules = classify.predict_pages(pages, taxonomy(), 12)
    with_model = classify.predict_pages(pages, taxonomy(), 12, trained)
    assert with_rules[2].type == "khac"  # after a blank separator: a new, untitled document
    assert with_model[2].type == "hop_dong" and with_model[2].confidence >= 0.5
