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
        "import sys, racer.cli, racer.cli.serve\n"
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


def _command(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from racer.cli import app; app()", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in result.stderr
    return lines[0]


def test_replay_server_and_serve_refuse_a_busy_port_in_one_line(shared_data, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = shared_data / "routerbench" / "mbpp_test.csv"
        replay = _command("replay-server", "--data", str(data), "--port", str(port))
        expected = f"Error: port {port} is already in use; pass another --port."
        assert _one_error_line(replay) == expected
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "backends: [{name: m, base_url: 'http://127.0.0.1:9/v1'}]\n"
            "routes: [{name: r, artifact: a}]\n"
            "auth: {api_keys: [k]}\n"
        )
        serve = _command("serve", "--config", str(config), "--port", str(port))
        assert _one_error_line(serve) == expected


def test_replay_server_names_an_unreadable_data_file(tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"prompt,model_a\n\xff\xfe\x00,1\n")
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"queries": [1,')
    for path in (binary, malformed, tmp_path / "absent.csv"):
        line = _one_error_line(_command("replay-server", "--data", str(path), "--port", "0"))
        assert str(path) in line
    assert "UTF-8" in _one_error_line(_command("replay-server", "--data", str(binary)))
