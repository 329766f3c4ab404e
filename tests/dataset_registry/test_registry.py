"""The registry and its validator, without ms-swift: every kind of bad row names file and row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_tools import check_data
from svp.dataset_registry.registry import (
    DataValidationError,
    RegistryError,
    load_dataset_rows,
    load_registry,
    parse_spec,
    sampled_count,
)


def good(image: str = "a.png") -> dict:
    return {"image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"},
        {"from": "gpt", "value": "A circle."}]}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "img" / name)
    (tmp_path / "img" / "text.png").write_text("not an image")
    (tmp_path / "img" / "empty.png").write_bytes(b"")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 16)
    return tmp_path


def registry_for(folder: Path, rows: list, name: str = "ds.jsonl", raw_lines=None) -> Path:
    ann = folder / name
    if raw_lines is not None:
        ann.write_text("\n".join(raw_lines) + "\n")
    elif name.endswith(".jsonl"):
        ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        ann.write_text(json.dumps(rows))
    reg = folder / "reg.yaml"
    reg.write_text(f"datasets:\n  ds:\n    annotation_path: {name}\n    data_path: img\n")
    return reg


def problems_of(folder: Path, rows: list, **kw):
    entry = load_registry([registry_for(folder, rows, **kw)])["ds"]
    with pytest.raises(DataValidationError) as err:
        load_dataset_rows(entry)
    return err.value


# --- spec and counts ---------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("gres", ("gres", None)), ("gres%50", ("gres", 50.0)), ("a_b%200", ("a_b", 200.0)),
    ("x%12.5", ("x", 12.5)), (" y%7 ", ("y", 7.0)), ("odd%name", ("odd%name", None)),
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_parse_spec_rejects_zero():
    with pytest.raises(RegistryError, match="> 0"):
        parse_spec("gres%0")


def test_rows_and_percent_together_are_named_not_an_unknown_dataset():
    with pytest.raises(RegistryError, match="#N .rows. and %X .percent. cannot be combined"):
        parse_spec("good#3%50")


@pytest.mark.parametrize("n,pct,expected", [
    (20, 50, 10), (6, 200, 12), (10, 33, 3), (10, 0.1, 1), (7, None, 7), (0, 50, 0),
    (3, 150, 5),  # 4.5 rounds half up
])
def test_sampled_count(n, pct, expected):
    assert sampled_count(n, pct) == expected


# --- registry files ------------------------------------------------------------------------

def test_registry_layouts_and_relative_paths(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    a = tmp_path / "a.yaml"
    a.write_text("datasets:\n  one: {annotation_path: sub/one.json, data_path: imgs}\n")
    b = tmp_path / "sub" / "b.yaml"
    b.write_text("two:\n  annotation_path: /abs/two.jsonl\n")
    entries = load_registry([a, b])
    assert entries["one"].annotation_path == tmp_path / "sub" / "one.json"
    assert entries["one"].data_path == tmp_path / "imgs"
    assert entries["two"].annotation_path == Path("/abs/two.jsonl")
    assert entries["two"].data_path is None


@pytest.mark.parametrize("text,message", [
    ("datasets:\n  x: {data_path: d}\n", "'annotation_path' is required"),
    ("datasets:\n  x: {annotation_path: a, extra: 1}\n", "unknown keys \\['extra'\\]"),
    ("datasets:\n  'x%5': {annotation_path: a}\n", "may not contain"),
    ("[1, 2]\n", "expected a mapping"),
    ("datasets: {x: [1]}\n", "expected a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_registry_errors_name_the_file(tmp_path: Path, text: str, message: str):
    reg = tmp_path / "reg.yaml"
    reg.write_text(text)
    with pytest.raises(RegistryError, match=message) as err:
        load_registry([reg])
    assert str(reg) in str(err.value)


def test_registry_duplicate_names_across_files(tmp_path: Path):
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text("same: {annotation_path: x.json}\n")
    with pytest.raises(RegistryError, match="already defined in .*a.yaml"):
        load_registry([tmp_path / "a.yaml", tmp_path / "b.yaml"])


def test_registry_missing_file(tmp_path: Path):
    with pytest.raises(RegistryError, match="not found"):
        load_registry([tmp_path / "nope.yaml"])


# --- conversion ----------------------------------------------------------------------------

def test_llava_rows_become_swift_messages(folder: Path):
    row = good()
    row["conversations"].insert(0, {"from": "system", "value": "Be brief."})
    entry = load_registry([registry_for(folder, [row, good("b.png")])])["ds"]
    loaded = load_dataset_rows(entry)
    assert loaded.skipped == 0 and loaded.report.rows_checked == 2
    first = loaded.rows[0]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][1]["content"] == "<image>\nWhat is it?"
    assert first["images"] == [str(folder / "img" / "a.png")]


def test_packed_lists_and_messages_format(folder: Path):
    swift_row = {"images": ["a.png", "b.png"], "messages": [
        {"role": "user", "content": "<image><image>Compare."},
        {"role": "assistant", "content": "Same."}]}
    text_only = {"conversations": [{"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello"}]}
    rows = [good(), [good("b.png"), swift_row], text_only]
    entry = load_registry([registry_for(folder, rows, name="ds.json")])["ds"]
    loaded = load_dataset_rows(entry)
    assert len(loaded.rows) == 4
    assert len(loaded.rows[2]["images"]) == 2
    assert "images" not in loaded.rows[3]


def test_relative_paths_without_data_path_use_the_annotation_folder(folder: Path):
    ann = folder / "img" / "ann.jsonl"
    ann.write_text(json.dumps(good()) + "\n")
    reg = folder / "r.yaml"
    reg.write_text(f"ds: {{annotation_path: {ann}}}\n")
    loaded = load_dataset_rows(load_registry([reg])["ds"])
    assert loaded.rows[0]["images"] == [str(folder / "img" / "a.png")]


# --- each kind of bad row: the file, the row and the reason ---------------------------------

BAD_ROWS = {
    "malformed_row/not an object": ("just text", "malformed_row", "expected an object"),
    "malformed_row/turn": ({"conversations": ["hi"]}, "malformed_row", "turn 1: expected"),
    "malformed_row/image type": (
        {**good(), "image": 3}, "malformed_row", "'image' must be a path"),
    "empty_conversation/missing": ({"image": "a.png"}, "empty_conversation", "no 'conversations'"),
    "empty_conversation/empty": ({"conversations": []}, "empty_conversation", "no 'conversations'"),
    "empty_conversation/system only": (
        {"conversations": [{"from": "system", "value": "x"}]}, "empty_conversation",
        "only a system message"),
    "unknown_role": (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
        "unknown_role", "turn 2: role 'bot'"),
    "turn_order/assistant first": (
        {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
        "turn_order", "turn 1: 'assistant' as the first turn"),
    "turn_order/two users": (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"},
                           {"from": "gpt", "value": "a"}]},
        "turn_order", "turn 2: 'user' after 'user'"),
    "turn_order/ends with user": (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                           {"from": "human", "value": "q2"}]},
        "turn_order", "last turn is 'user'"),
    "empty_turn": (
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}]},
        "empty_turn", "turn 2: empty assistant message"),
    "image_tag_mismatch/more tags": (
        {**good(), "conversations": [{"from": "human", "value": "<image><image>q"},
                                     {"from": "gpt", "value": "a"}]},
        "image_tag_mismatch", "2 <image> tag(s) but 1 image(s)"),
    "image_tag_mismatch/no tag": (
        {**good(), "conversations": [{"from": "human", "value": "q"},
                                     {"from": "gpt", "value": "a"}]},
        "image_tag_mismatch", "0 <image> tag(s) but 1 image(s)"),
    "missing_image": (good("nope.png"), "missing_image", "image file not found: "),
    "unreadable_image/text": (good("text.png"), "unreadable_image", "cannot be read"),
    "unreadable_image/empty": (good("empty.png"), "unreadable_image", "cannot be read"),
    "video_tag_mismatch": (
        {"video": "../clip.mp4", "conversations": [{"from": "human", "value": "q"},
                                                   {"from": "gpt", "value": "a"}]},
        "video_tag_mismatch", "0 <video> tag(s) but 1 video(s)"),
    "missing_video": (
        {"video": "gone.mp4", "conversations": [{"from": "human", "value": "<video>q"},
                                                {"from": "gpt", "value": "a"}]},
        "missing_video", "video file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_bad_row_kind_names_file_row_and_reason(folder: Path, case: str):
    bad, kind, reason = BAD_ROWS[case]
    err = problems_of(folder, [good(), good("b.png"), bad])  # the bad row is line 3
    kinds = {p.kind for p in err.report.problems}
    assert kind in kinds, err.report.problems
    text = str(err)
    assert f"{folder / 'ds.jsonl'}: line 3: {kind}: " in text
    assert reason in text
    assert "1 bad rows out of 3" in text
    assert f"{kind}=" in text.splitlines()[-2]  # per-kind count line


def test_invalid_json_line_reports_line_number_and_keeps_going(folder: Path):
    lines = [json.dumps(good()), "", "{not json", json.dumps(good("nope.png"))]
    err = problems_of(folder, [], raw_lines=lines)
    text = str(err)
    assert "line 3: malformed_row: invalid JSON" in text
    assert "line 4: missing_image" in text  # found after the malformed line
    assert err.report.rows_checked == 3  # the blank line is not a row


def test_packed_row_location(folder: Path):
    rows = [good(), [good("b.png"), good("nope.png")]]
    err = problems_of(folder, rows, name="ds.json")
    assert f"{folder / 'ds.json'}: row 2.2: missing_image" in str(err)


def test_invalid_json_file_is_a_registry_error(folder: Path):
    reg = registry_for(folder, [], name="ds.json", raw_lines=["[{", "oops"])
    with pytest.raises(RegistryError, match="invalid JSON at line 2"):
        load_dataset_rows(load_registry([reg])["ds"])


def test_strict_report_shows_first_n_then_counts(folder: Path):
    rows = [good("nope.png") for _ in range(30)] + [good()]
    entry = load_registry([registry_for(folder, rows)])["ds"]
    with pytest.raises(DataValidationError) as err:
        load_dataset_rows(entry, max_shown=5)
    text = str(err.value)
    assert text.count("missing_image: image file not found") == 5
    assert "... and 25 more" in text
    assert "30 bad rows out of 31" in text
    assert "Problems per kind: missing_image=30" in text
    assert text.startswith("dataset 'ds': 30 bad rows")
    assert text.endswith("set SVP_BAD_ROWS=skip to drop them.")


def test_skip_mode_drops_and_counts(folder: Path):
    rows = [good(), good("nope.png"), {"conversations": []}, good("b.png")]
    entry = load_registry([registry_for(folder, rows)])["ds"]
    loaded = load_dataset_rows(entry, skip_bad_rows=True)
    assert len(loaded.rows) == 2
    assert loaded.skipped == 2
    assert loaded.report.counts() == {"missing_image": 1, "empty_conversation": 1}


def test_several_problems_in_one_row_count_as_one_bad_row(folder: Path):
    bad = {"image": ["nope.png", "text.png"], "conversations": [
        {"from": "human", "value": "<image>q"}, {"from": "gpt", "value": "a"}]}
    err = problems_of(folder, [bad])
    assert err.report.bad_rows == 1
    assert err.report.counts() == {"image_tag_mismatch": 1, "missing_image": 1,
                                   "unreadable_image": 1}


# --- the command-line checker -----------------------------------------------------------------

def test_check_data_clean_prints_counts_after_sampling(shapes_registry, capsys):
    rc = check_data.main(["--registry", str(shapes_registry), "--dataset", "shapes%50",
                          "more%200"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert any(line.split() == ["shapes", "20", "0", "20", "50%", "10"]
               for line in out.splitlines()), out
    assert any(line.split() == ["more", "6", "0", "6", "200%", "12"]
               for line in out.splitlines()), out
    assert "clean: 26 rows checked." in out


def test_check_data_reports_problems_and_fails(folder: Path, capsys):
    reg = registry_for(folder, [good(), good("nope.png")])
    rc = check_data.main(["--registry", str(reg)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "line 2: missing_image" in out
    assert "NOT CLEAN: 1 bad rows; training would stop" in out


def test_check_data_says_what_skip_mode_does(folder: Path, capsys, monkeypatch):
    monkeypatch.setenv("SVP_BAD_ROWS", "skip")
    reg = registry_for(folder, [good(), good("nope.png")])
    assert check_data.main(["--registry", str(reg)]) == 1
    out = capsys.readouterr().out
    assert "NOT CLEAN: 1 bad rows; training drops and counts them (SVP_BAD_ROWS=skip" in out
    assert "would stop" not in out


def test_check_data_unknown_dataset(shapes_registry, capsys):
    rc = check_data.main(["--registry", str(shapes_registry), "--dataset", "nope%5"])
    assert rc == 2
    assert "unknown dataset(s) ['nope']" in capsys.readouterr().err
