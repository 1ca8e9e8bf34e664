"""The gateway configuration: pydantic models read from YAML, validated at start-up.

Everything that changes how the gateway behaves (timeouts, retries, backoff,
concurrency limits, fallbacks, costs, keys, limits) is a field here, so that the
request handlers have one code path and the YAML file says what happens.

A minimal ``gateway.yaml``::

    backend_defaults:          # applied to every backend, each may override
      timeout_s: 30
      retries: 2
    backends:
      - name: gpt-4-1106-preview              # a model name of the artifact
        base_url: https://api.openai.com/v1
        model: gpt-4-1106-preview             # the upstream model id (default: name)
        api_key_env: OPENAI_API_KEY           # read at start-up, never logged
        input_cost_per_token: 1.0e-5
        output_cost_per_token: 3.0e-5
      - name: mistralai/mistral-7b-chat
        base_url: http://127.0.0.1:8001/v1
    routes:
      - name: racer                           # what clients send as `model`
        artifact: artifacts/arc-alpha-0.1     # relative to this file
        aggregator: vote
    auth:
      api_keys_env: RACER_GATEWAY_KEYS        # comma-separated bearer tokens
    limits:                                   # per key, counted per process
      default: {requests_per_minute: 600, max_usd_per_day: 20}
      keys:
        - key_env: TEAM_A_KEY                 # or fingerprint: (the log's owner)
          requests_per_minute: 60
          max_usd_per_day: 5
    decision_log:
      url: sqlite:///decisions.sqlite3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: The opening of a refusal's reply; the reason follows (racer.refusal.refusal_reason).
DEFAULT_ABSTENTION_MESSAGE = "I cannot answer this reliably"


class ConfigError(ValueError):
    """The gateway configuration is invalid; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendConfig(_Strict):
    """One OpenAI-compatible upstream (vLLM, Ollama, OpenAI, OpenRouter, a replay server).

    Parameters
    ----------
    name : str
        The candidate model's name, as the artifact spells it.
    base_url : str
        The OpenAI-compatible base URL, ending before ``/chat/completions``.
    model : str, optional
        The model id sent upstream; defaults to ``name``.
    api_key_env : str, optional
        The environment variable that holds the upstream key (read at start-up).
    input_cost_per_token, output_cost_per_token : float, default 0
        US dollars per prompt / completion token, for the reported cost.
    cost_from_upstream : bool, default False
        Use the dollars the upstream reports in ``usage.cost`` (OpenRouter does; the
        replay server reports the recorded cost) instead of the token prices.
    timeout_s : float, default 60
        Deadline of one attempt, from sending the request to the last byte of the
        answer (not a per-read timeout: an upstream that drips bytes is cut off at
        the deadline too). A timed-out attempt is not retried. A relayed stream is
        bounded by it up to its first chunk; after that, ``timeout_s`` is the longest
        wait between two chunks, so a healthy long stream is never cut.
    connect_timeout_s : float, default 5
        Time allowed to open a connection.
    retries : int, default 2
        Extra attempts after an HTTP 429, a 5xx or a failed connection, only while
        no byte of an answer has arrived (a broken answer is never re-sent, so a
        request is never billed twice).
    breaker_failures : int, default 3
        Consecutive failed calls that open the backend's circuit breaker. Only the
        backend's own failures count: a failed connection, a timeout before the answer
        began (or a relayed stream silent for ``timeout_s``), a 5xx, a 429 left after
        the retries, any other HTTP error (a 401: the gateway's upstream key) and a
        malformed or broken answer. A client error the upstream answers (400, 404, 413,
        422: a too-long prompt; passed on to the client), a refusal, ``finish_reason:
        content_filter``, a stream ending in a client-error event and a member cut by
        ``grace_s`` say nothing about the backend and never count (a healthy long
        stream is never cut). While open, calls fail at once without contacting the
        backend.
    cooldown_s : float, default 1
        How long the breaker stays open the first time. Then one call (a single
        attempt, the probe) is let through: success closes the breaker, failure opens
        it for twice the last cooldown, up to ``max_cooldown_s``. A probe that meets a
        client error tells nothing, and the next call probes. So a backend that comes
        back serves again within the cooldown then running (1 s after a short outage,
        never more than ``max_cooldown_s``), and a dead one gets one probe per
        ``max_cooldown_s`` once the cooldown has grown.
    max_cooldown_s : float, default 5
        The longest cooldown (at least ``cooldown_s``).
    backoff_s : float, default 0.25
        The first retry waits this long, each later one twice as long as the last.
    max_backoff_s : float, default 8
        The longest wait between attempts (also caps a ``Retry-After`` header).
    max_concurrency : int, default 64
        The most requests in flight to this backend at once; more wait in line.
    logprobs : bool, default False
        Ask this backend for the answer's token log-probabilities (``logprobs: true``)
        on every non-streamed call whose client did not set ``logprobs`` itself. They
        are the strongest cascade signal after agreement: a certified policy's stop rule
        reads them, an audited decision logs them and ``racer collect`` stores them.
        vLLM, OpenAI and OpenRouter (for the models that have them) return chat
        logprobs; a backend that ignores the field answers as usual and the signal is
        just absent. A client that did not ask gets no logprobs back. Streams are not
        asked (a relayed stream carries logprobs only when its client asked).
    """

    name: str = Field(min_length=1)
    base_url: str
    model: str | None = None
    api_key_env: str | None = None
    input_cost_per_token: float = Field(0.0, ge=0)
    output_cost_per_token: float = Field(0.0, ge=0)
    cost_from_upstream: bool = False
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    backoff_s: float = Field(0.25, ge=0)
    max_backoff_s: float = Field(8.0, ge=0)
    max_concurrency: int = Field(64, ge=1)
    breaker_failures: int = Field(3, ge=1)
    cooldown_s: float = Field(1.0, gt=0)
    max_cooldown_s: float = Field(5.0, gt=0)
    logprobs: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @property
    def upstream_model(self) -> str:
        """The model id sent in upstream requests."""
        return self.model or self.name


class ShadowConfig(_Strict):
    """A candidate artifact that decides on a route's live traffic without serving.

    Parameters
    ----------
    artifact : pathlib.Path
        The candidate's artifact directory (relative to the configuration file).
    name : str, optional
        The route name its decisions are logged under; default ``ROUTE.shadow``.

    For every request of its route the shadow scores the query and forms its
    calibrated set, after the answer and off the request's path; it calls no backend.
    Its decision is logged with id ``ID+shadow`` (``ID`` the served decision's), its
    set in ``invoked``, ``chosen`` empty and no cost. A shadow artifact with a
    certified policy logs its calibrated set (a policy's calls depend on answers a
    shadow does not get). Compare with :func:`racer.serve.shadow_report.compare_shadow`.
    """

    artifact: Path
    name: str | None = Field(None, min_length=1)


class RouteConfig(_Strict):
    """One model name that clients can ask for: a calibrated artifact and how to answer.

    Parameters
    ----------
    name : str
        The ``model`` value clients send (``racer``, ``racer-alpha-0.05``, ...).
    artifact : pathlib.Path
        The artifact directory (base router + calibrated RACER), relative paths
        being relative to the configuration file.
    aggregator : {"vote", "best"}, default "vote"
        How the answers of a multi-model set become one (see :mod:`racer.aggregate`).
    answer_kind : {"auto", "choice", "number"}, default "auto"
        What the vote extracts from each answer.
    abstention_message : str
        The opening of the reply to a refused query (no model called); ": <reason>." follows.
    fallbacks : list of str, default []
        Backends tried in order, one at a time, when every model of the set failed.
    score_in_thread : bool, default True
        Score in a worker thread instead of on the event loop, so that one long
        prompt does not stall every other request; the queries of concurrent
        requests are scored together, one router call and one thread hop per batch
        (:mod:`racer.serve.scoring_batcher`). ``false`` scores on the event loop, one
        query at a time, for routers known to be cheap on every input.
    batch_scoring : {"one_call", "per_query"}, default "one_call"
        How a batch of concurrent queries is scored in the thread: in one router call
        (cheapest; scores may differ from a lone query's in the last bits), or one
        call per query (bit for bit a lone query's scores).
    deadline_s : float, default 60
        The most a request may take, scoring, retries and fallbacks included. At the
        deadline the answer is formed from the members that have answered; when none
        has, the request fails with 504.
    completion : {"decided", "all"}, default "decided"
        When a multi-model set's answer is final. ``"decided"``: as soon as the
        answers so far fix the aggregate whatever the pending members would say
        (``best``: every higher-scored member has answered or failed; ``vote``: the
        leading answer's weight exceeds the runner-up's plus every pending member's,
        and no pending member outranks the chosen response). ``"all"``: wait for
        every member (or the deadline).
    grace_s : float, optional
        Once one member has answered, wait at most this much longer for the others
        (a straggler bound). Unset: no bound other than ``deadline_s``. Abandoned
        members are reported in ``racer.backends`` and ``racer.completion``.
    cancel_abandoned : bool, default True
        Cancel the calls of abandoned members once the answer is final: their
        connections are closed, so an upstream that stops work on a disconnect does
        not finish (and bill) an answer nobody uses; ``racer.completion.cancelled``
        lists them. A member cut at the deadline counts as a failure for its circuit
        breaker (a hung member ends up skipped like a dead one); one cut by ``grace_s``
        or because the answer was decided counts as nothing (it was only slower). Of
        the members cut by ``grace_s``, one call per backend at a time is not cancelled
        but runs to its end (up to ``timeout_s``), so that the breaker still learns
        whether the backend is slow (it answers) or hung (it times out).
        ``false``: they keep running in the background up to their own ``timeout_s``
        (unused).
    abstention : {"flag", "strict", "off"}, optional
        The abstention mode the route serves; an artifact calibrated for another
        mode is refused at start-up. Unset: the artifact's mode.
    audit_rate : float, default 0
        Share of requests audited: chosen by a seeded draw independent of their
        content, they also call every other model in the background, and every
        response is logged (see :mod:`racer.serve.audit`).
    audit_seed : int, default 0
        Seed of the audit draws (with the route name).
    judge : str, optional
        The backend that judges a certified parallel policy with the ``judge``
        aggregator (:mod:`racer.serve.answering.certified_policy`), instead of the policy's own
        judge model.
    shadow : ShadowConfig, optional
        A candidate artifact that decides on this route's traffic without serving
        (its decisions logged for comparison); reloaded with the route.
    on_reference_failure : {"error", "serve"}, default "error"
        What a route does when the answer its certificate calls for cannot be had: a
        certified cascade or policy whose reference (last tier) failed, or a calibrated
        set whose top-scored member refused while another member answered.
        ``"error"``: the certified route never serves outside its certificate; a
        cascade fails (502, or the route's ``fallbacks``, flagged), and a set serves the
        top member's refusal. ``"serve"``: serve the cascade's cheaper tiers' vote, or
        the next member's answer, flagged. Every answer outside the certificate says
        so: ``racer.certified: false`` with ``racer.uncertified`` (the reason), the
        header ``x-racer-certified: false``, the decision log's ``uncertified`` column
        and ``racer_uncertified_answers_total{route,reason}``. The default is the
        safe one: the queries a cascade escalates are exactly those its cheap tiers
        are unreliable on, so an operator who chose a certificate gets an error, not
        a silently weaker answer, unless they opt in.
    """

    name: str = Field(min_length=1)
    artifact: Path
    aggregator: Literal["vote", "best"] = "vote"
    answer_kind: Literal["auto", "choice", "number"] = "auto"
    abstention_message: str = DEFAULT_ABSTENTION_MESSAGE
    fallbacks: list[str] = Field(default_factory=list)
    score_in_thread: bool = True
    batch_scoring: Literal["one_call", "per_query"] = "one_call"
    deadline_s: float = Field(60.0, gt=0)
    completion: Literal["decided", "all"] = "decided"
    grace_s: float | None = Field(None, gt=0)
    cancel_abandoned: bool = True
    abstention: Literal["flag", "strict", "off"] | None = None
    audit_rate: float = Field(0.0, ge=0, le=1)
    audit_seed: int = 0
    judge: str | None = None
    shadow: ShadowConfig | None = None
    on_reference_failure: Literal["error", "serve"] = "error"

    @property
    def shadow_route(self) -> RouteConfig | None:
        """The shadow as a route of its own (its name and artifact), or None."""
        if self.shadow is None:
            return None
        name = self.shadow.name or f"{self.name}.shadow"
        return self.model_copy(
            update={
                "name": name,
                "artifact": self.shadow.artifact,
                "shadow": None,
                "abstention": None,
            }
        )


class AuthConfig(_Strict):
    """Bearer tokens that clients must send to the gateway.

    Parameters
    ----------
    api_keys : list of str, default []
        Accepted tokens written in the file (prefer ``api_keys_env``).
    api_keys_env : str, default "RACER_GATEWAY_KEYS"
        An environment variable holding comma-separated accepted tokens.
    allow_unauthenticated : bool, default False
        Serve without any key (local demos only); otherwise no key is a start-up error.
    admin_keys : list of str, default []
        Tokens that may also read the detailed ``/healthz``, ``/metrics``, ``/docs`` and
        ``/openapi.json``, post feedback on any decision and call the admin endpoints
        (``POST /admin/reload``); prefer ``admin_keys_env``. Admin keys are accepted
        as client keys too. Without any, the admin endpoints answer 403.
    admin_keys_env : str, default "RACER_ADMIN_KEYS"
        An environment variable holding comma-separated admin tokens.
    """

    api_keys: list[str] = Field(default_factory=list)
    api_keys_env: str | None = "RACER_GATEWAY_KEYS"
    allow_unauthenticated: bool = False
    admin_keys: list[str] = Field(default_factory=list)
    admin_keys_env: str | None = "RACER_ADMIN_KEYS"

    def resolve_admin_keys(self) -> frozenset[str]:
        """The admin tokens from the file and the environment."""
        keys = list(self.admin_keys)
        if self.admin_keys_env:
            keys += os.environ.get(self.admin_keys_env, "").split(",")
        return frozenset(k.strip() for k in keys if k.strip())

    def resolve_keys(self, has_admin: bool = False) -> frozenset[str]:
        """The accepted client tokens from the file and the environment."""
        keys = [k.strip() for k in self.api_keys]
        if self.api_keys_env:
            keys += os.environ.get(self.api_keys_env, "").split(",")
        accepted = frozenset(k.strip() for k in keys if k.strip())
        if not accepted and not has_admin and not self.allow_unauthenticated:
            raise ConfigError(
                "auth: no gateway API key configured. Set the environment variable "
                f"{self.api_keys_env or 'named in auth.api_keys_env'} to comma-separated "
                "tokens, list them in auth.api_keys, or set auth.allow_unauthenticated: "
                "true for a local demo."
            )
        return accepted


class ServerConfig(_Strict):
    """Where the gateway listens and how much it accepts.

    Parameters
    ----------
    host, port : str, int
        The listen address.
    max_request_bytes : int, default 1000000
        Larger request bodies get 413.
    max_header_bytes : int, default 16384
        Larger request heads (request line and headers) are refused and the
        connection closed (uvicorn's ``h11_max_incomplete_event_size``).
    read_timeout_s : float, default 10
        A client that has not sent its whole request (head and body) this long after
        the connection's first byte gets 408 and the connection is closed; idle
        keep-alive connections are closed after this long too.
    max_in_flight : int, default 256
        Chat completions one process works on at once (streams until their last
        byte). One more is answered 429 with ``Retry-After`` at once instead of
        queueing (:mod:`racer.serve.admission`): beyond the process's capacity a queue
        only adds latency to every request. Size it to about the requests per second
        one process sustains times the backends' latency.
    worker_ready_timeout_s : float, default 60
        With ``racer serve --workers N``: how long a worker started by SIGHUP may take
        to load before uvicorn gives up and keeps the old workers (logged as an error).
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    max_header_bytes: int = Field(16_384, ge=1024)
    read_timeout_s: float = Field(10.0, gt=0)
    max_in_flight: int = Field(256, ge=1)
    worker_ready_timeout_s: float = Field(60.0, gt=0)


class DecisionLogConfig(_Strict):
    """Where routing decisions and feedback are written, and for how long.

    Parameters
    ----------
    url : str, default "sqlite:///racer-decisions.sqlite3"
        ``sqlite:///PATH`` (relative to the configuration file), ``sqlite:///:memory:``,
        or ``postgresql://user@host/db`` (needs the optional ``psycopg`` driver).
    store_prompts : bool or "hash", default "hash"
        What is kept of the routed query: its SHA-256 (``"hash"``), nothing (``false``),
        or the text (``true``: needed to recalibrate from the log later with
        ``racer dataset --from-log``).
    on_log_failure : {"serve", "refuse"}, default "serve"
        While the log cannot be written (a PostgreSQL restart): answer with
        ``logged: false`` and count it in ``racer_decisions_unlogged_total``
        (``serve``), or answer 503 with ``Retry-After`` (``refuse``). Either way
        ``/readyz`` answers 503 until the log is back.
    retention_days : float, optional
        Delete decisions older than this many days (checked every minute).
    max_rows : int, optional
        Keep only this many decisions, the newest. Decisions with feedback are kept
        either way (the risk monitors are rebuilt from them).
    share_reloads : bool, optional
        Publish ``POST /admin/reload`` and SIGHUP reloads in the log's database and
        follow the ones other processes publish (about once a second), with the risk
        monitors brought up to the shared feedback at the same time. Unset: on for a
        PostgreSQL log (instances sharing it follow each other), off for SQLite
        (``racer serve --workers N`` turns it on for its workers).

    SQLite files are created readable by their owner only (mode 0600).
    """

    url: str = "sqlite:///racer-decisions.sqlite3"
    store_prompts: bool | Literal["hash"] = "hash"
    on_log_failure: Literal["serve", "refuse"] = "serve"
    retention_days: float | None = Field(None, gt=0)
    max_rows: int | None = Field(None, ge=1)
    share_reloads: bool | None = None

    def shares_reloads(self) -> bool:
        """Whether reloads are shared through the log (see ``share_reloads``)."""
        if self.share_reloads is not None:
            return self.share_reloads
        return not self.url.startswith("sqlite://")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(
                f"must start with sqlite:// or postgresql://, got {value.split(':')[0]!r}"
            )
        return value


class Limit(_Strict):
    """How much one gateway key may ask: requests per minute and dollars per day.

    Parameters
    ----------
    requests_per_minute : int, optional
        Requests accepted in any 60-second window; more get 429 with ``Retry-After``
        (the seconds until the window has room). Unset: no rate limit.
    max_usd_per_day : float, optional
        Dollars of upstream calls (the ``racer.cost_usd`` of its answers, failed ones
        included) per UTC day. Once reached, requests get 429 with ``Retry-After`` (the
        seconds to UTC midnight); the request that crosses the cap is still answered,
        since a cost is known only once the calls are made. Unset: no cap.
    """

    requests_per_minute: int | None = Field(None, ge=1)
    max_usd_per_day: float | None = Field(None, gt=0)


class KeyLimit(Limit):
    """The limits of one key, named by the variable that holds it or by its fingerprint.

    Parameters
    ----------
    key_env : str, optional
        An environment variable holding the key (read at start-up, never logged).
    fingerprint : str, optional
        The key's fingerprint, as the decision log's ``owner`` column shows it.
    """

    key_env: str | None = None
    fingerprint: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")

    @model_validator(mode="after")
    def _one_name(self) -> KeyLimit:
        if (self.key_env is None) == (self.fingerprint is None):
            raise ValueError("give exactly one of key_env and fingerprint")
        return self


class LimitsConfig(_Strict):
    """Per-key rate limits and spend caps, counted in each gateway process.

    Parameters
    ----------
    default : Limit
        The limits of every key not listed in ``keys`` (and of unauthenticated callers,
        counted together). Default: none.
    keys : list of KeyLimit
        Keys with their own limits (an unset field: no limit for that key).

    The counters live in the process's memory: each instance, and each worker of
    ``racer serve --workers N``, counts on its own, so N processes accept up to N
    times the configured rate and spend; a restart resets them.
    """

    default: Limit = Field(default_factory=Limit)
    keys: list[KeyLimit] = Field(default_factory=list)


class MonitorConfig(_Strict):
    """The anytime-valid check of the realised misrouting rate against alpha.

    Parameters
    ----------
    delta : float, default 0.05
        Probability of a false alarm over the whole (unbounded) stream of feedback.
    """

    delta: float = Field(0.05, gt=0, lt=1)


class GatewayConfig(_Strict):
    """The whole gateway: backends, routes, authentication, limits, log and monitor."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    backend_defaults: dict[str, Any] = Field(default_factory=dict)
    backends: list[BackendConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(min_length=1)
    decision_log: DecisionLogConfig = Field(default_factory=DecisionLogConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_backend_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("backends"), list):
            defaults = data.get("backend_defaults") or {}
            if isinstance(defaults, dict):
                data = dict(data)
                data["backends"] = [
                    {**defaults, **b} if isinstance(b, dict) else b for b in data["backends"]
                ]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        for kind, names in (
            ("backend", [b.name for b in self.backends]),
            ("route", [r.name for r in self.routes]),
        ):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{kind} names must be unique; repeated: {repeated}")
        known = {b.name for b in self.backends}
        for route in self.routes:
            unknown = [f for f in route.fallbacks if f not in known]
            if unknown:
                raise ValueError(
                    f"route {route.name!r}: fallbacks {unknown} are not configured backends "
                    f"({sorted(known)})"
                )
            if route.judge is not None and route.judge not in known:
                raise ValueError(
                    f"route {route.name!r}: judge {route.judge!r} is not a configured backend "
                    f"({sorted(known)})"
                )
        shadows = [r.shadow_route.name for r in self.routes if r.shadow_route is not None]
        taken = sorted(set(shadows) & {r.name for r in self.routes})
        if taken or len(set(shadows)) < len(shadows):
            raise ValueError(
                f"shadow names must differ from every route's and each other's; repeated: "
                f"{taken or sorted({n for n in shadows if shadows.count(n) > 1})}"
            )
        return self


def _relative_to(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


def parse_config(data: Any, base_dir: Path | str = ".") -> GatewayConfig:
    """Validate a configuration mapping; relative paths are resolved against ``base_dir``.

    Raises
    ------
    ConfigError
        With one line per invalid field, naming its location in the file.
    """
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as error:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        ]
        raise ConfigError("Invalid gateway configuration:\n" + "\n".join(lines)) from None
    base = Path(base_dir)
    routes = [
        r.model_copy(
            update={
                "artifact": _relative_to(r.artifact, base),
                "shadow": r.shadow
                and r.shadow.model_copy(update={"artifact": _relative_to(r.shadow.artifact, base)}),
            }
        )
        for r in config.routes
    ]
    log = config.decision_log
    if log.url.startswith("sqlite:///") and log.url != "sqlite:///:memory:":
        db_path = _relative_to(Path(log.url.removeprefix("sqlite:///")), base)
        log = log.model_copy(update={"url": f"sqlite:///{db_path}"})
    return config.model_copy(update={"routes": routes, "decision_log": log})


def load_config(path: Path | str) -> GatewayConfig:
    """Read and validate a gateway configuration from a YAML file.

    Examples
    --------
    >>> config = load_config("gateway.yaml")  # doctest: +SKIP
    >>> [route.name for route in config.routes]  # doctest: +SKIP
    ['racer']
    """
    path = Path(path)
    return parse_config(read_config_file(path), base_dir=path.parent)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a gateway configuration file, unvalidated.

    Raises
    ------
    ConfigError
        A missing file, invalid YAML, or a document that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Gateway configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (backends:, routes:, ...), got {data!r}.")
    return data
