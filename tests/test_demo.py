"""The README's main job, `callscore demo`, runs end to end on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainer.synthetic import synthetic_bank_frame

pytestmark = pytest.mark.slow


def test_demo_trains_publishes_and_scores(kafka_settings, tmp_path):
    data = tmp_path / "bank.csv"
    synthetic_bank_frame(rows=3000).to_csv(data, sep=";", index=False)
    env = {
        **os.environ,
        **kafka_settings.as_env(),
        "CALLSCORE_DATA": str(data),
        "CALLSCORE_STREAMER_APP_ID": f"demo-{kafka_settings.topic_prospects}",
        "CALLSCORE_STREAMER_DATA_DIR": str(tmp_path / "faust"),
    }
    env.pop("CALLSCORE_HTTP_PORT", None)  # the demo picks a free port
    result = subprocess.run(
        [sys.executable, "-m", "callscore.cli", "demo", "--events", "6", "--search", "fast",
         "--out", str(tmp_path / "card")],
        env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    out = result.stdout + result.stderr
    assert "published term-deposit v1" in out
    assert out.count(" v1 ") >= 6  # six call tasks, each scored by v1
    assert "post_call_field" in out and "invalid_fields" in out
    assert (tmp_path / "card" / "report.html").is_file()
