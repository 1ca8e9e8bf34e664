"""A gateway over one replay server per model, on loopback: shared by the serving tests."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import httpx
import yaml
from serve_fakes import AUTH, KEY

from racer.data.dataset import RoutingDataset
from racer.data.load import load_dataset
from racer.serve.app import app_from_config
from racer.serve.config import load_config
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.runner import ServerThread


def quietly_load(path: Path) -> RoutingDataset:
    """``load_dataset`` without its notes on merged ids and missing labels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(path)


async def ask_all(url: str, model: str, queries: list[str]) -> list[httpx.Response]:
    """One chat completion per query to ``model`` (12 at a time)."""
    limit = asyncio.Semaphore(12)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as client:

        async def one(query: str) -> httpx.Response:
            async with limit:
                return await client.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": query}]},
                )

        return await asyncio.gather(*(one(q) for q in queries))


def serve_every_query(
    test: RoutingDataset, artifact: Path, tmp_path: Path, *, logprobs: bool = False
) -> list[dict]:
    """Every query of ``test`` through a gateway route ``"route"`` serving ``artifact``,
    over one replay server per model of ``test``; the JSON answers (all 200)."""
    names = list(test.model_names)
    with ServerThread([create_replay_app(ReplayBook(test), m) for m in names]) as replays:
        defaults = {"timeout_s": 20, "retries": 0, "cost_from_upstream": True}
        config = {
            "backend_defaults": {**defaults, "logprobs": logprobs},
            "backends": [
                {"name": m, "base_url": f"{url}/v1"}
                for m, url in zip(names, replays.urls, strict=True)
            ],
            "routes": [{"name": "route", "artifact": str(artifact)}],
            "auth": {"api_keys": [KEY]},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with ServerThread([app_from_config(load_config(path))]) as gateway:
            queries = [str(q) for q in test.queries]
            answers = asyncio.run(ask_all(gateway.urls[0], "route", queries))
    assert all(a.status_code == 200 for a in answers), answers[0].text
    return [a.json() for a in answers]
