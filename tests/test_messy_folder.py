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
    # each unreadable file under the code of its problem, with the reason and a fix
    assert by_code["zero-byte"][0]["paths"] == [str(bad["zero"])]
    assert by_code["not-an-image"][0]["paths"] == [str(bad["text"])]
    assert by_code["decompression-bomb"][0]["paths"] == [str(bad["bomb"])]
    assert by_code["truncated"][0]["paths"] == [str(bad["truncated"])]
    assert "decompression bomb" in by_code["decompression-bomb"][0]["message"]
    assert all(f["fix"] for f in report["findings"])
    assert str(odd["rotated"]) in by_code["exif-rotated"][0]["paths"]
    assert str(odd["cmyk"]) in by_code["cmyk"][0]["paths"]
    conflicts = " ".join(f["message"] for f in by_code["conflicting-labels"])
    assert str(dups["exact"]) in conflicts and "exact duplicate" in conflicts
    assert str(dups["near"]) in conflicts and "near-duplicate" in conflicts
    assert all(f["severity"] == "error" for f in by_code["conflicting-labels"])
    assert report["counts"] == {"cat": 11, "dog": 13} and not report["ok"]
    assert main(["doctor", str(root), "--workers", "0"]) == 1
    human = capsys.readouterr().out
    assert "[error] conflicting-labels" in human and str(bad["bomb"]) in human


@pytest.mark.slow
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


def _picture(rng, k, i, size=(48, 40)):
    y, x = np.mgrid[0:size[1], 0:size[0]]
    arr = np.stack([x * 5 + i * 9, y * 6 + i * 5, np.full_like(x, 40 + 90 * k)], -1)
    return Image.fromarray(np.clip(arr + rng.integers(0, 30, arr.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def messier(tmp_path_factory):
    """Every kind of problem at once, an empty class folder included: {code: a file it must name}."""
    import io
    root = tmp_path_factory.mktemp("messier") / "data"
    rng = np.random.default_rng(1)
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            _picture(rng, k, i).save(root / cls / f"{cls}_{i}.png")
    (root / "bird").mkdir()                                           # empty class
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(png, "PNG")
    damaged = bytearray(png.getvalue())
    start = damaged.index(b"IDAT") + 10
    damaged[start:start + 30] = bytes(b ^ 0x55 for b in damaged[start:start + 30])
    files = {"corrupt": root / "cat" / "corrupt.png", "truncated": root / "dog" / "truncated.png",
             "zero-byte": root / "cat" / "zero.png", "cmyk": root / "dog" / "cmyk.jpg",
             "16-bit": root / "cat" / "deep.png", "exif-rotated": root / "dog" / "rotated.jpg",
             "conflicting-labels": root / "dog" / "copy_of_cat_0.png",
             "outside-class-folder": root / "loose.png", "system-files": root / ".DS_Store",
             "non-image-file": root / "dog" / "notes.txt", "tiny": root / "cat" / "tiny.png",
             "empty-class": root / "bird"}
    files["corrupt"].write_bytes(bytes(damaged))
    files["truncated"].write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    files["zero-byte"].write_bytes(b"")
    Image.new("CMYK", (40, 48), (200, 10, 10, 0)).save(files["cmyk"])
    Image.fromarray(rng.integers(0, 65535, (40, 48)).astype(np.uint16)).save(files["16-bit"])
    exif = Image.Exif()
    exif[0x0112] = 6
    _picture(rng, 1, 20).save(files["exif-rotated"], exif=exif)
    files["conflicting-labels"].write_bytes((root / "cat" / "cat_0.png").read_bytes())
    _picture(rng, 0, 30).save(files["outside-class-folder"])
    for system in (root / ".DS_Store", root / "cat" / ".DS_Store", root / "dog" / "Thumbs.db",
                   root / "cat" / "._cat_1.png"):
        system.write_bytes(b"\0\0\0\1Bud1")
    files["non-image-file"].write_text("where these came from\n")
    _picture(rng, 0, 40, size=(6, 6)).save(files["tiny"])
    return root, files


def test_doctor_lists_every_problem_in_one_pass(messier, capsys):
    """Structural problems (an empty class) are findings next to the per-file ones, not an exit."""
    root, files = messier
    assert main(["doctor", str(root), "--json", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out)                      # stdout is exactly one JSON document
    findings = report["findings"]
    by_code = {f["code"]: f for f in findings}
    for code, path in files.items():
        assert code in by_code, (code, sorted(by_code))
        assert str(path) in by_code[code]["paths"], (code, by_code[code]["paths"])
    for f in findings:
        assert f["severity"] in ("error", "warning", "info") and f["code"] and f["fix"], f
    assert by_code["empty-class"]["severity"] == "error"
    assert by_code["conflicting-labels"]["severity"] == "error"
    assert {str(root / "dog" / "Thumbs.db"), str(root / "cat" / "._cat_1.png"),
            str(root / "cat" / ".DS_Store")} <= set(by_code["system-files"]["paths"])
    summary = report["summary"]
    assert summary["errors"] == sum(f["severity"] == "error" for f in findings) >= 2
    assert summary["ok"] is False and report["counts"]["bird"] == 0

    assert main(["doctor", str(root), "--workers", "0"]) == 1
    text = capsys.readouterr().out
    for f in findings:
        assert f"[{f['severity']}] {f['code']}: " in text
    assert text.count("    fix: ") == len(findings)


def test_training_still_refuses_the_structural_errors(messier):
    """The doctor reports an empty class; the training scan keeps refusing it with one line."""
    from vistrain.data.scan import scan_folder
    from vistrain.errors import DataError
    root, _ = messier
    with pytest.raises(DataError, match="without images: bird"):
        scan_folder(root)
