"""`python -m data_pipeline.feed_bench` measures SentencePiece and the stream in one unit (tokens as packed: BOS + pieces
+ EOS per document) and records its figures as a JSON line with the command, date, machine and TensorFlow setting."""

import json
import subprocess
import sys

from helpers import ROOT, person_env


def test_the_bench_writes_one_json_line_in_the_stream_s_units(small_corpus, tmp_path):
    out = tmp_path / "bench.jsonl"
    command = [sys.executable, "-m", "data_pipeline.feed_bench", "--config=experiments/configs/tiny.py",
               f"--config.data.corpus_dir={small_corpus}", "--config.model.vocab_size=1024", "--seconds=0.2",
               "--rounds=2", "--sample_mb=0.05", "--threads=1", "--nopretokenized", f"--json={out}"]
    result = subprocess.run(command, cwd=ROOT, env=person_env(), capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "with BOS and EOS" in result.stdout
    (line,) = out.read_text().splitlines()
    figures = json.loads(line)
    assert figures["command"] == "python -m data_pipeline.feed_bench" and figures["tf_enable_onednn_opts"] == "0"
    assert figures["threads"] == 1 and "cores" in figures["machine"]
    for key in ("sentencepiece_tokens_per_s", "sentencepiece_1_thread_tokens_per_s", "stream_tokens_per_s"):
        assert len(figures[key]) == 2 and all(rate > 0 for rate in figures[key])
