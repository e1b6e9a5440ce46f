"""``read_jsonl``: one reader of ``metrics.jsonl`` for every command, the same on a cut last line."""

import json
import logging

import pytest

from sparse_lens.files.jsonl import read_jsonl

RECORDS = [{"step": 1, "train_loss": 5.0}, {"step": 2, "train_loss": 4.5}]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_every_record_and_skips_blank_lines(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", [json.dumps(RECORDS[0]), "", json.dumps(RECORDS[1])])
    assert read_jsonl(path) == RECORDS
    assert read_jsonl(_write(tmp_path / "empty.jsonl", [])) == []


def test_a_cut_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    cut = json.dumps(RECORDS[1])[:9]  # a kill while the last record was written
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + cut)
    with caplog.at_level(logging.WARNING, logger="sparse_lens.files.jsonl"):
        assert read_jsonl(path) == RECORDS[:1]
    assert "metrics.jsonl:2: dropping a cut last line" in caplog.text


@pytest.mark.parametrize("bad", ['{"step": 1, "tra', "[1, 2]", "not json"])
def test_a_bad_line_before_the_last_is_corruption(tmp_path, bad):
    path = _write(tmp_path / "metrics.jsonl", [json.dumps(RECORDS[0]), bad, json.dumps(RECORDS[1])])
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2 is corrupt"):
        read_jsonl(path)


def test_not_text_or_missing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n\xff\xfe\n')
    with pytest.raises(ValueError, match="not UTF-8"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "absent.jsonl")
