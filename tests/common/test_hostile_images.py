"""Pictures that pass a header check and then fail (or go wrong) where training reads them:
a truncated JPEG, 20000x100 and 20000x90 pictures, a 16-bit PNG, a 48-byte PNG declaring
20000x20000 pixels (a decompression bomb), an EXIF-rotated JPEG. Before: ``check_data``
called the first four clean and ``swift sft`` silently trained on random other rows in their
place; the 16-bit one turned 99.6 % white; the bomb crashed every tool without naming a file.
Now each is a named bad row (or a note), everywhere: the checker, ``check_data``, the
registry inside ``swift sft`` (tests/dataset_registry/test_swift_e2e.py), the converters and
the mask tokenizers."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svp.common.image_check import check_image, open_rgb
from svp.common.settings import qwen_budgets

BUDGET_1M = qwen_budgets({"MAX_PIXELS": "1003520"})  # the recipes' default


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (1-bit grey), no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def make_pictures(folder: Path) -> dict[str, Path]:
    """One small file per hostile kind (and a good one)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    files["good"] = folder / "good.png"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(files["good"])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["ratio200"] = folder / "ratio200.png"
    Image.new("L", (20000, 100), 128).save(files["ratio200"])
    files["ratio222"] = folder / "ratio222.png"
    Image.new("L", (20000, 90), 128).save(files["ratio222"])
    files["sixteen"] = folder / "sixteen.png"
    Image.fromarray(np.full((40, 60), 20000, np.uint16)).save(files["sixteen"])
    files["bomb"] = folder / "bomb.png"
    files["bomb"].write_bytes(_png_header_only(20000, 20000))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    files["rotated"] = folder / "rotated.jpg"
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(
        files["rotated"], "JPEG", exif=exif.tobytes())
    return files


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return make_pictures(tmp_path_factory.mktemp("hostile_pictures"))


def test_each_picture_is_read_as_training_reads_it(pictures):
    assert Image.open(pictures["sixteen"]).mode == "I;16"  # the fixture is what it says
    expect = {"good": None, "truncated": "unreadable", "ratio200": "aspect ratio",
              "ratio222": "aspect ratio", "sixteen": "wide samples", "bomb": "too large",
              "rotated": None}
    for name, kind in expect.items():
        got = check_image(pictures[name], BUDGET_1M)
        assert got.kind == kind, (name, got)
    assert "20000x100: resized for the model to 14140x56" in check_image(
        pictures["ratio200"], BUDGET_1M).error
    assert "aspect ratio 222.2:1 is above the processor's 200:1" in check_image(
        pictures["ratio222"], BUDGET_1M).error
    assert "mode I;16" in check_image(pictures["sixteen"]).error
    assert "decompression bomb" in check_image(pictures["bomb"]).error
    assert check_image(pictures["rotated"]).orientation == 6
    # a header check finds none of the decode problems (why it is not the default)
    assert check_image(pictures["truncated"], full=False).kind is None
    # the data tools' reader: the good picture in RGB, the 16-bit one refused, not white
    image, _ = open_rgb(pictures["good"])
    assert image.mode == "RGB" and image.size == (64, 48)
    assert open_rgb(pictures["sixteen"])[0] is None


def _registry(folder: Path, pictures: dict[str, Path], bad_line: bool = True) -> Path:
    rows = [json.dumps({"image": str(p) if name == "rotated" else p.name, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": name}]})
        .encode() for name, p in pictures.items()]
    if bad_line:
        rows.append('{"image": "caf\xe9.png", "conversations": []}'.encode("latin-1"))
    (folder / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    reg = folder / "reg.yaml"
    here = pictures["good"].parent
    reg.write_text(f"hostile: {{annotation_path: rows.jsonl, data_path: {here}}}\n"
                   f"other: {{annotation_path: rows.jsonl, data_path: {elsewhere}}}\n")
    return reg


def test_check_data_names_every_hostile_picture(pictures, tmp_path, capsys, monkeypatch):
    from data_tools import check_data

    monkeypatch.setenv("MAX_PIXELS", "1003520")
    reg = _registry(tmp_path, pictures)
    assert check_data.main(["--registry", str(reg), "--dataset", "hostile"]) == 1
    out = capsys.readouterr().out
    rows = tmp_path / "rows.jsonl"
    for line, kind, says in ((2, "unreadable_image", "truncated.jpg: cannot be read"),
                             (3, "unusable_image", "ratio200.png: 20000x100: resized"),
                             (4, "unusable_image", "ratio222.png: 20000x90: aspect ratio"),
                             (5, "unusable_image", "sixteen.png: mode I;16"),
                             (6, "unreadable_image", "bomb.png: too large to decode safely"),
                             (8, "malformed_row", "not UTF-8 (byte 0xe9 at column 15)")):
        assert f"{rows}: line {line}: {kind}: " in out, (line, out)
        assert says in out, says
    assert "6 bad rows out of 8" in out
    assert "note: 1 images carry an EXIF orientation tag" in out
    # the rotated picture's absolute path lies outside data_path of the second entry
    capsys.readouterr()
    check_data.main(["--registry", str(reg), "--dataset", "other"])
    assert "note: 1 rows name an absolute image path outside the entry's data_path" in (
        capsys.readouterr().out)


def test_converters_skip_and_name_hostile_pictures(pictures, tmp_path, capsys, monkeypatch):
    """convert_vlmr3 aborted the whole conversion on a 20000x90 picture and crashed on the
    bomb; convert_rl crashed on the bomb. Now each is a named skip and the rest converts."""
    from data_tools import convert_rl, convert_vlmr3

    monkeypatch.setenv("MAX_PIXELS", "1003520")
    src = tmp_path / "vlmr3.jsonl"
    src.write_text("".join(json.dumps({"image_path": str(p), "QnA": [
        {"Q": "q", "A3": "{Crop x [1, 2, 30, 40]} <answer>a</answer>"}]}) + "\n"
        for p in pictures.values()))
    assert convert_vlmr3.main(["--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 0
    summary = json.loads((tmp_path / "o.summary.json").read_text())
    assert summary["written"] == 2  # good and rotated
    assert summary["skipped_unreadable_image"] == 2 and summary["skipped_unusable_image"] == 3
    err = capsys.readouterr().err
    assert "vlmr3.jsonl:line 4: unusable_image: " in err and "aspect ratio 222.2:1" in err
    assert "vlmr3.jsonl:line 6: unreadable_image: " in err and "bomb.png" in err

    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"image_path": str(p), "question": "q", "answer": "a"})
                          + "\n" for p in pictures.values()))
    assert convert_rl.main(["--input", str(rl), "--output", str(tmp_path / "rl_o.jsonl")]) == 0
    summary = json.loads((tmp_path / "rl_o.summary.json").read_text())
    assert summary["written"] == 2
    assert summary["skipped_unreadable_image"] == 2 and summary["skipped_unusable_image"] == 3


def test_mask_tokenizer_skips_a_16_bit_picture_instead_of_whitening_it(pictures, tmp_path,
                                                                       trained_codec, capsys):
    from data_tools import tokenize_dam
    from svp.masktok.coco import mask_to_rle

    mask = np.zeros((40, 60), bool)
    mask[5:30, 10:50] = True
    rows = [{"image": name, "mask": mask_to_rle(mask), "caption": f"{name} region"}
            for name in ("sixteen.png", "bomb.png", "truncated.jpg")]
    ann = tmp_path / "dam.json"
    ann.write_text(json.dumps(rows))
    assert tokenize_dam.main(["--annotations", str(ann), "--image-root",
                              str(pictures["good"].parent), "--codec",
                              f"builtin:{trained_codec[0]}", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "dam.summary.json").read_text())
    assert summary["written"] == 0
    assert summary["skipped: image has 16/32-bit samples"] == 1
    assert summary["skipped: image too large"] == 1 and summary["skipped: image unreadable"] == 1
    err = capsys.readouterr().err
    assert "sixteen.png: mode I;16" in err and "bomb.png: too large" in err


def test_rows_ms_swift_replaces_are_logged_and_counted(pictures, caplog):
    """What the validators cannot see ahead (a plain data file, not a registry) still fails
    in ms-swift's lazy encoding, which swaps the row for a random other one and shows only
    ten tracebacks. Through ms-swift's own LazyLLMDataset: every replaced row is logged with
    its reason and picture, and counted; an over-length row is counted apart."""
    import logging

    from swift.dataset.utils import LazyLLMDataset
    from swift.template.base import MaxLengthError

    from svp.common import swift_trainer

    swift_trainer.install_replacement_count()
    swift_trainer.install_replacement_count()  # idempotent: one wrapper, one count per row

    def encode(row, return_length=False):
        if row["kind"] == "bad":
            check = check_image(row["images"][0], BUDGET_1M)
            raise ValueError(check.error)
        if row["kind"] == "long":
            raise MaxLengthError("too long")
        return {"input_ids": [1, 2], "length": 2}

    good = {"kind": "good", "images": [str(pictures["good"])]}
    failed, long_ = swift_trainer.CountedEncode.failed, swift_trainer.CountedEncode.too_long
    logging.getLogger("swift").addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING):
            for other in ({"kind": "bad", "images": [str(pictures["ratio222"])]},
                          {"kind": "long", "images": []}):
                data = LazyLLMDataset([good, other], encode, random_state=0, traceback_limit=0)
                assert data[1] == {"input_ids": [1, 2], "length": 2}  # the good row instead
    finally:
        logging.getLogger("swift").removeHandler(caplog.handler)
    counted = swift_trainer.CountedEncode.failed, swift_trainer.CountedEncode.too_long
    # back as they were: this process's exit report is not about the test's rows
    swift_trainer.CountedEncode.failed, swift_trainer.CountedEncode.too_long = failed, long_
    assert counted == (failed + 1, long_ + 1)
    text = caplog.text
    assert "svp: a training row could not be encoded (ValueError: 20000x90: aspect ratio" in text
    assert f"Pictures: {pictures['ratio222']}" in text


def test_ms_swift_refuses_a_16_bit_picture_instead_of_whitening_it(pictures):
    """Where ms-swift itself reads a plain data file's pictures: the 16-bit one is refused
    (and then counted as a replaced row), an 8-bit one loads as before, in RGB."""
    import swift.template.base as template_base

    from svp.common import swift_trainer

    swift_trainer.install_wide_image_refusal()
    swift_trainer.install_wide_image_refusal()  # idempotent
    with pytest.raises(ValueError, match="sixteen.png: mode I;16: samples wider than 8 bits"):
        template_base.Template._load_image(str(pictures["sixteen"]), True)
    image = template_base.Template._load_image(str(pictures["good"]), True)
    assert image.mode == "RGB" and image.size == (64, 48)
