"""The command line: `racer serve` start-up errors, `racer replay-server` for real, and
the serve extra staying optional."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
from typer.testing import CliRunner

from racer.cli import app
from racer.data.load import load_dataset

runner = CliRunner()


def test_serve_refuses_a_missing_or_invalid_configuration_clearly(tmp_path):
    missing = runner.invoke(app, ["serve", "--config", str(tmp_path / "absent.yaml")])
    assert missing.exit_code == 2 and "not found" in missing.output
    config = tmp_path / "gateway.yaml"
    config.write_text("backends: []\nroutes: [{name: r, artifact: a}]\n")
    invalid = runner.invoke(app, ["serve", "--config", str(config)])
    assert invalid.exit_code == 2
    assert "backends: List should have at least 1 item" in invalid.output


def test_serve_refuses_to_start_without_gateway_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("RACER_GATEWAY_KEYS", raising=False)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "backends: [{name: m, base_url: 'http://127.0.0.1:9/v1'}]\n"
        "routes: [{name: r, artifact: a}]\n"
    )
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "no gateway API key" in result.output


def test_the_command_line_does_not_need_the_serve_extra():
    code = (
        "import sys, racer.cli, racer.serve.cli\n"
        "assert not {'fastapi', 'uvicorn', 'httpx'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_replay_server_serves_recorded_responses_until_stopped(shared_data):
    data = shared_data / "routerbench" / "mbpp_test.csv"
    model = "claude-v2"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from racer.cli import app; app()",
            "replay-server",
            "--data",
            str(data),
            "--model",
            model,
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = None
        for _ in range(20):
            line = process.stdout.readline()
            if "base_url" in line:
                url = line.split("base_url: '")[1].split("'")[0]
                break
        assert url and url.startswith("http://127.0.0.1:")
        dataset = load_dataset(data)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10)
        answer = client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": dataset.queries[7]}]
        )
        column = dataset.model_names.index(model)
        assert answer.choices[0].message.content == dataset.responses[7, column]
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert process.returncode == 0, "SIGTERM should stop the servers and exit cleanly"
