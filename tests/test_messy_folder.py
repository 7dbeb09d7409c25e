"""A generated messy folder: doctor names every problem, training completes on the good files."""
from __future__ import annotations

import json
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vistrain.cli.main import main


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` grey pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "data"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            y, x = np.mgrid[0:40, 0:48]
            arr = np.stack([x * 5 + i * 7, y * 6 + i * 3, np.full_like(x, 60 + 120 * k)], -1)
            arr = np.clip(arr + rng.integers(0, 30, arr.shape), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{cls}_{i}.png")
    bad = {
        "zero": root / "cat" / "zero.jpg",
        "truncated": root / "cat" / "truncated.jpg",
        "text": root / "dog" / "notes.jpg",
        "bomb": root / "dog" / "bomb.png",
    }
    bad["zero"].write_bytes(b"")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "full.jpg", quality=90)
    data = (root / "full.jpg").read_bytes()
    (root / "full.jpg").unlink()
    bad["truncated"].write_bytes(data[: len(data) // 3])
    bad["text"].write_text("this is not an image\n")
    bad["bomb"].write_bytes(_png_claiming(100_000, 100_000))
    odd = {"rotated": root / "cat" / "rotated.jpg", "cmyk": root / "dog" / "cmyk.jpg"}
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(odd["rotated"], exif=exif)
    Image.new("CMYK", (40, 40), (200, 10, 10, 0)).save(odd["cmyk"])
    dups = {"exact": root / "dog" / "copy_of_cat_0.png", "near": root / "dog" / "cat_1_reencoded.jpg"}
    dups["exact"].write_bytes((root / "cat" / "cat_0.png").read_bytes())
    Image.open(root / "cat" / "cat_1.png").save(dups["near"], quality=85)
    return root, bad, odd, dups


def test_doctor_names_every_problem(messy, capsys):
    root, bad, odd, dups = messy
    assert main(["doctor", str(root), "--json", "--workers", "0"]) == 1  # conflicting labels
    report = json.loads(capsys.readouterr().out)
    by_code = {}
    for f in report["findings"]:
        by_code.setdefault(f["code"], []).append(f)
    unreadable = by_code["unreadable"][0]
    assert sorted(unreadable["paths"]) == sorted(str(p) for p in bad.values())
    msg = unreadable["message"]
    assert "empty file" in msg and "not an image" in msg and "decompression bomb" in msg
    assert "truncated" in msg or "corrupt" in msg
    assert str(odd["rotated"]) in by_code["exif-rotated"][0]["paths"]
    assert str(odd["cmyk"]) in by_code["converted-modes"][0]["paths"]
    conflicts = " ".join(f["message"] for f in by_code["conflicting-labels"])
    assert str(dups["exact"]) in conflicts and "exact duplicate" in conflicts
    assert str(dups["near"]) in conflicts and "near-duplicate" in conflicts
    assert all(f["severity"] == "error" for f in by_code["conflicting-labels"])
    assert report["counts"] == {"cat": 11, "dog": 13} and not report["ok"]
    assert main(["doctor", str(root), "--workers", "0"]) == 1
    human = capsys.readouterr().out
    assert "[error] conflicting-labels" in human and str(bad["bomb"]) in human


def test_train_completes_on_the_good_files(messy, tmp_path, monkeypatch, caplog):
    root, bad, odd, dups = messy
    monkeypatch.setenv("VISTRAIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        rc = main(["train", str(root), "--out", str(out), "--model", "resnet18", "--no-pretrained",
                   "--epochs", "1", "--strategy", "finetune", "--set", "preprocess.size=32",
                   "--set", "data.num_workers=0", "--batch-size", "8"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    skipped = {s["file"]: s["reason"] for s in run["skipped_files"]}
    assert sorted(skipped) == sorted(str(p) for p in bad.values())
    assert run["n_images"] == 24 - len(bad)
    log = caplog.text
    for p in bad.values():
        assert f"skipped {p}" in log
    assert "conflicting-labels" in log   # the quick checks ran before training
