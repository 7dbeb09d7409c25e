"""report.html: every section, escaping, self-contained, gallery mapping, and Chromium renders it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import markupsafe
import pytest
import torch

from conftest import make_image_folder
from vistrain.report.build import build_report
from vistrain.report.gallery import gallery_items
from vistrain.report.html import SECTIONS
from vistrain.rundir import RunFolder

EVIL = "<b>&\"x'"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from vistrain.config import TrainConfig
    from vistrain.training.run import run_training
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("report")
    data = make_image_folder(tmp / "data", classes=("cat", EVIL, "eel"), per_class=14, size=(36, 32))
    cfg = TrainConfig()
    cfg.data.root, cfg.data.cache, cfg.data.num_workers = str(data), "off", 1
    cfg.model.name, cfg.model.pretrained = "vistrain/resnet-tiny", False
    cfg.strategy.name, cfg.optim.lr, cfg.preprocess.size, cfg.train.epochs = "finetune", 3e-3, 32, 2
    try:
        run_training(cfg, tmp / "run", progress=False)
        build_report(tmp / "run")
    finally:
        torch.set_num_threads(n)
    return tmp / "run"


@pytest.mark.slow
def test_report_has_every_section_and_escapes_names(run_dir):
    page = (run_dir / "report.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert EVIL not in page
    assert str(markupsafe.escape(EVIL)) in page  # &lt;b&gt;&amp;&#34;x&#39;
    assert "could not be built" not in page
    assert page.count("<img ") >= 8  # bar chart, previews, curves, confusion, ROC, PR, reliability, gallery


@pytest.mark.slow
def test_training_writes_the_quick_data_checks_and_the_report_shows_them(run_dir):
    doc = json.loads((run_dir / "doctor.json").read_text())
    assert "summary" in doc and isinstance(doc["findings"], list)
    page = (run_dir / "report.html").read_text()
    assert "<h3>Data doctor</h3>" in page and "no doctor.json" not in page


@pytest.mark.slow
def test_report_is_self_contained(run_dir):
    page = (run_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert "<script" not in page.lower() and "url(" not in page and "@import" not in page


@pytest.mark.slow
def test_gallery_maps_predictions_to_the_right_files(run_dir):
    folder = RunFolder.read(run_dir)
    g = gallery_items(folder)
    preds = json.loads((run_dir / "predictions.json").read_text())[g.part]
    position = {i: j for j, i in enumerate(preds["indices"])}
    items = g.losses + [it for pair in g.pairs for it in pair.items]
    assert items
    for it in items:
        assert it.path.is_file()
        # the class folder of the file is the label the prediction was scored against
        assert it.file.split("/")[0] == folder.classes[it.true]
        assert preds["labels"][position[it.id]] == it.true
        assert abs(preds["probs"][position[it.id]][it.true] - it.p_true) < 1e-9
    losses = [it.loss for it in g.losses]
    assert losses == sorted(losses, reverse=True)


@pytest.mark.slow
def test_training_wrote_csv_log(run_dir):
    lines = (run_dir / "history.csv").read_text().splitlines()
    history = json.loads((run_dir / "history.json").read_text())
    assert lines[0].startswith("epoch,train_loss,train_accuracy,val_loss,val_accuracy")
    assert len(lines) == 1 + len(history)


def test_tensorboard_missing_is_a_clear_error():
    from vistrain.config import LoggingConfig
    from vistrain.errors import VistrainError
    from vistrain.training.loggers import check_logging
    try:
        import torch.utils.tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    with pytest.raises(VistrainError, match="pip install tensorboard"):
        check_logging(LoggingConfig(tensorboard=True))


@pytest.mark.slow
def test_report_cli_regenerates(run_dir, tmp_path, capsys):
    from vistrain.cli.main import main
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert "report.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "not a vistrain run directory" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                    reason="chromium not installed (apt-get install -y chromium); required in CI")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    assert CHROMIUM is not None, "chromium is required in CI to check report.html renders"
    url = (run_dir / "report.html").resolve().as_uri()
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    shot, netlog = tmp_path / "report.png", tmp_path / "netlog.json"
    r = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,4000",
                               f"--log-net-log={netlog}", url],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    for sid in SECTIONS:
        assert f'id="{sid}"' in dom.stdout
    log = r.stderr + dom.stderr
    # console messages (errors included) are logged as "INFO:CONSOLE..."; the page has no JS
    for bad in ("net::ERR_", "Failed to load resource", "Uncaught", "CONSOLE"):
        assert bad not in log, [line for line in log.splitlines() if bad in line]
    # every network request of the page (Chromium's own background calls to Google aside)
    urls = set(re.findall(r'"url":"([^"]*)"', netlog.read_text())) if netlog.exists() else set()
    own = re.compile(r"^https?://([a-z0-9.-]+\.)?(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)[/:]")
    assert not [u for u in urls if not u.startswith(("file:", "data:")) and not own.match(u)]
