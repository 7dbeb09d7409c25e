"""report.html in seconds: Grad-CAM once per gallery (batched, on the final feature map), the
augmentation preview drawn without matplotlib, a progress bar while it builds, and run.json
saying what its wall_seconds leave out."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from vistrain.interpret.cam import compute_cam, feature_map_cam
from vistrain.report import gallery
from vistrain.report.run_sections import views_mosaic


def test_feature_map_cam_equals_grad_cam_of_the_last_feature_map():
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=4).eval()
    x = torch.randn(3, 3, 64, 64)
    fast, logits = feature_map_cam(model, x, [0, 2, 3])
    slow, ref_logits = compute_cam(model, x, [0, 2, 3])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, ref_logits)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_views_mosaic_lays_out_images_by_view():
    views = [torch.full((2, 1, 224, 224), v, dtype=torch.uint8) for v in (10, 200, 90)]
    grid = views_mosaic(views, tile=112, gap=4)
    assert grid.shape == (2 * 112 + 4, 3 * 112 + 4 * 2, 3) and grid.dtype == np.uint8
    assert grid[0, 0, 0] == 10 and grid[-1, -1, 0] == 90 and grid[0, 112 + 4, 0] == 200
    assert (grid[:, 112:116] == 255).all()  # the gap


def test_run_json_says_what_wall_seconds_leave_out(tiny_run):
    run = json.loads((tiny_run.dir / "run.json").read_text())
    # >= 0: the shared tiny run's report may have been rebuilt by another test, warm, in < 0.05 s
    assert isinstance(run["report_seconds"], float) and run["report_seconds"] >= 0
    assert run["total_seconds"] == pytest.approx(run["wall_seconds"] + run["report_seconds"], abs=0.11)
    assert "report" in run["wall_seconds_covers"]


def test_gallery_computes_grad_cam_in_one_batch(tiny_run_copy, monkeypatch):
    from vistrain.report.html import build_full_report
    calls = []
    real = gallery.feature_map_cam
    monkeypatch.setattr(gallery, "feature_map_cam", lambda m, x, target_class: calls.append(len(x))
                        or real(m, x, target_class))
    build_full_report(tiny_run_copy, progress=False)
    assert len(calls) == 1 and 1 <= calls[0] <= gallery.MAX_CAM_IMAGES
    assert "and Grad-CAM" in (tiny_run_copy / "report.html").read_text()


def test_report_shows_progress_on_a_terminal(tiny_run_copy, monkeypatch, capsys):
    from vistrain.report.html import build_full_report
    monkeypatch.setenv("VISTRAIN_PROGRESS", "1")
    build_full_report(tiny_run_copy)
    assert "report.html" in capsys.readouterr().err
