"""Faregate for a LiteLLM proxy: enforce Faregate's budgets before each call, feed its ledger after.

Register it in the proxy's config.yaml (this file next to the config, or on PYTHONPATH):

    litellm_settings:
      callbacks: faregate_callback.proxy_handler_instance

Contract (docs/integrations.md, "LiteLLM"):

- Enforce (``async_pre_call_hook``): before LiteLLM calls a provider it asks Faregate's
  ``GET /v1/check`` in trusted mode: ``x-faregate-collector-token`` and the attribution of the
  LiteLLM key (``x-faregate-org``: the key's organization, else FAREGATE_DEFAULT_ORG;
  ``-team``: its team id; ``-user``: its user id; ``-key``: its alias, else its hash;
  ``-project``: its project id), ``x-faregate-model`` (the model asked for, provider prefix
  removed) and ``x-forwarded-uri`` (LiteLLM's route, so Faregate answers in that API's terms).
  200: the call goes. Any other answer from Faregate (a budget block: 402 on ``/v1/messages``,
  429 elsewhere; 403 a model the key may not use; 503 enforcement stale and failing closed)
  refuses the call with Faregate's status, message and ``x-should-retry``. When Faregate cannot
  be asked (connection error, timeout, an answer that is not Faregate's, or 400/401: a wrong
  token or setting here, logged at error), FAREGATE_FAIL_MODE applies: ``open`` (default) lets
  the call go and logs a warning, ``closed`` refuses it with 503.
- Meter (``async_log_success_event``, ``async_log_failure_event``): one collector record
  (``POST /v1/usage``) per call that reached a provider, with the provider-reported token
  classes (``input`` without cache, ``cache_read``, ``cache_write_5m`` / ``_1h``, ``output``
  without ``reasoning``), the provider, the provider's model, the same attribution as the check,
  the status and latency. Never a prompt, a completion or a key. ``event_id`` is a UUIDv5 of
  ``litellm_call_id`` and the outcome, so a record sent twice (a retried batch, a repeated
  log) counts once. A failure before any provider was called (a refusal by this hook or another)
  sends nothing.
- Never on the request path: a record is appended to an in-memory queue (at most
  FAREGATE_QUEUE_MAX) and a background task posts batches (at most FAREGATE_BATCH_MAX records)
  every FAREGATE_FLUSH_SECS. A batch that fails (connection error, 5xx, 429) is sent again, the
  same batch, with backoff (0.5 s doubling to 30 s), at most FAREGATE_SEND_ATTEMPTS times. A
  record that cannot be sent (attempts exhausted, refused by Faregate as invalid, the queue full,
  the process stopping with records queued) is logged at error with its JSON, so it can be sent
  again by hand; none is dropped silently. The records of the last flush interval are lost if
  the process is killed (SIGKILL).

Settings (environment): FAREGATE_URL (the Faregate ingress, e.g. http://faregate:8080),
FAREGATE_COLLECTOR_TOKEN (its ``ingress.collector_token``; never logged), FAREGATE_DEFAULT_ORG
(``default``), FAREGATE_FAIL_MODE (``open``), FAREGATE_CHECK_TIMEOUT_SECS (2),
FAREGATE_FLUSH_SECS (1), FAREGATE_BATCH_MAX (500), FAREGATE_SEND_ATTEMPTS (8),
FAREGATE_QUEUE_MAX (100000).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import json
import logging
import os
import uuid

import httpx
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

log = logging.getLogger("faregate")

# event_id = uuid5(EVENT_NAMESPACE, "<litellm_call_id>/<success|failure>").
EVENT_NAMESPACE = uuid.UUID("6b1d3c1e-7f0a-5e1b-9a51-0c2f6e7d4a10")

ENDPOINTS = {
    "completion": "CHAT_COMPLETIONS",
    "acompletion": "CHAT_COMPLETIONS",
    "anthropic_messages": "MESSAGES",
    "responses": "RESPONSES",
    "aresponses": "RESPONSES",
    "embedding": "EMBEDDINGS",
    "aembedding": "EMBEDDINGS",
}


def _setting(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


class FaregateCallback(CustomLogger):
    """Asks Faregate before each call and reports each call's usage to its collector."""

    def __init__(self) -> None:
        super().__init__()
        self.url = _setting("FAREGATE_URL", "").rstrip("/")
        self.token = _setting("FAREGATE_COLLECTOR_TOKEN", "")
        self.default_org = _setting("FAREGATE_DEFAULT_ORG", "default")
        self.fail_mode = _setting("FAREGATE_FAIL_MODE", "open")
        if self.fail_mode not in ("open", "closed"):
            raise ValueError(f"FAREGATE_FAIL_MODE must be open or closed, not {self.fail_mode!r}")
        self.check_timeout = float(_setting("FAREGATE_CHECK_TIMEOUT_SECS", "2"))
        self.flush_secs = float(_setting("FAREGATE_FLUSH_SECS", "1"))
        self.batch_max = int(_setting("FAREGATE_BATCH_MAX", "500"))
        self.send_attempts = int(_setting("FAREGATE_SEND_ATTEMPTS", "8"))
        self.queue_max = int(_setting("FAREGATE_QUEUE_MAX", "100000"))
        if not self.url or not self.token:
            raise ValueError("faregate_callback needs FAREGATE_URL and FAREGATE_COLLECTOR_TOKEN")
        self.queue: list[dict] = []
        self.in_flight: list[dict] = []
        self.refused: dict[str, None] = {}  # call ids refused here, oldest first (bounded)
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._wake: asyncio.Event | None = None
        self._flusher: asyncio.Task | None = None
        atexit.register(self._log_unsent_at_exit)

    # ---- enforcement -------------------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        route = getattr(user_api_key_dict, "request_route", None) or (
            "/v1/messages" if call_type == "anthropic_messages" else "/v1/chat/completions"
        )
        headers = {
            "x-faregate-collector-token": self.token,
            "x-forwarded-uri": route,
            **_attribution_headers(self._attribution_of_key(user_api_key_dict)),
        }
        model = _without_provider(data.get("model"))
        if model:
            headers["x-faregate-model"] = model
        try:
            answer = await self._http().get(f"{self.url}/v1/check", headers=headers, timeout=self.check_timeout)
        except httpx.HTTPError as error:
            return self._cannot_ask(f"{type(error).__name__}: {error}", data)
        if answer.status_code == 200:
            return None
        refusal = _faregate_error(answer)
        if refusal is None:
            return self._cannot_ask(f"an answer that is not Faregate's (HTTP {answer.status_code})", data)
        if answer.status_code in (400, 401):
            log.error("faregate: /v1/check refused this callback's request: %s", refusal.get("message"))
            return self._cannot_ask(f"HTTP {answer.status_code} (check FAREGATE_COLLECTOR_TOKEN and the settings)", data)
        passed = {k: v for k, v in answer.headers.items() if k.lower() in ("x-should-retry", "retry-after")}
        self._remember_refused(data.get("litellm_call_id"))
        raise HTTPException(status_code=answer.status_code, detail={"error": refusal}, headers=passed)

    def _remember_refused(self, call_id) -> None:
        if call_id:
            self.refused[call_id] = None
            while len(self.refused) > 10_000:
                del self.refused[next(iter(self.refused))]

    def _cannot_ask(self, why: str, data: dict):
        if self.fail_mode == "open":
            log.warning("faregate: cannot check the budget (%s); failing open, the call goes", why)
            return None
        log.warning("faregate: cannot check the budget (%s); failing closed, the call is refused", why)
        message = "Faregate budget enforcement cannot be reached and this gateway fails closed; retry shortly"
        self._remember_refused(data.get("litellm_call_id"))
        raise HTTPException(status_code=503, detail={"error": {"type": "api_error", "message": message}})

    def _attribution_of_key(self, key) -> dict:
        return {
            "org": getattr(key, "org_id", None) or self.default_org,
            "team": getattr(key, "team_id", None),
            "user": getattr(key, "user_id", None),
            "key_id": getattr(key, "key_alias", None) or getattr(key, "token", None),
            "project": getattr(key, "project_id", None),
        }

    # ---- metering ----------------------------------------------------------------------------

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._meter(kwargs, response_obj, "success")

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._meter(kwargs, response_obj, "failure")

    def _meter(self, kwargs: dict, response_obj, outcome: str) -> None:
        try:
            record = self._record(kwargs, response_obj, outcome)
        except Exception:  # a logging callback must never break LiteLLM
            log.exception("faregate: cannot build a usage record for call %s", kwargs.get("litellm_call_id"))
            return
        if record is not None:
            self._enqueue(record)

    def _record(self, kwargs: dict, response_obj, outcome: str) -> dict | None:
        payload = kwargs.get("standard_logging_object") or {}
        metadata = payload.get("metadata") or {}
        error = payload.get("error_information") or {}
        provider = payload.get("custom_llm_provider") or error.get("llm_provider")
        call_id = payload.get("litellm_call_id") or kwargs.get("litellm_call_id")
        if call_id in self.refused:
            del self.refused[call_id]
            return None  # refused by Faregate's check: Faregate's own metrics count it
        reached_provider = provider and (outcome == "success" or payload.get("api_base"))
        if not reached_provider or not call_id:
            log.debug("faregate: call %s never reached a provider; not metered", call_id)
            return None
        model = _without_provider(payload.get("model"), provider) or _without_provider(kwargs.get("model"), provider)
        served = getattr(response_obj, "model", None) if outcome == "success" else None
        usage = metadata.get("usage_object") if outcome == "success" else None
        status = 200 if outcome == "success" else _error_status(error.get("error_code"))
        started = payload.get("startTime") or datetime.datetime.now(datetime.timezone.utc).timestamp()
        attribution = {
            "org": metadata.get("user_api_key_org_id") or self.default_org,
            "team": metadata.get("user_api_key_team_id"),
            "user": metadata.get("user_api_key_user_id"),
            "key_id": metadata.get("user_api_key_alias") or metadata.get("user_api_key_hash"),
            "project": metadata.get("user_api_key_project_id"),
        }
        record = {
            "event_id": str(uuid.uuid5(EVENT_NAMESPACE, f"{call_id}/{outcome}")),
            "occurred_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
            **{name: value for name, value in attribution.items() if value},
            "provider": provider,
            "model": model or "unknown",
            "endpoint": ENDPOINTS.get(payload.get("call_type") or kwargs.get("call_type") or "", "OTHER"),
            "request_id": call_id,
            "tokens": _tokens(usage or {}),
            "streaming": bool(payload.get("stream")),
            "status": status,
            "latency_ms": max(0, int((payload.get("response_time") or 0) * 1000)),
        }
        if served and served != model:
            record["served_model"] = served
        if isinstance(usage, dict) and usage.get("service_tier"):
            record["service_tier"] = usage["service_tier"]
        return record

    # ---- delivery ----------------------------------------------------------------------------

    def _enqueue(self, record: dict) -> None:
        if len(self.queue) >= self.queue_max:
            log.error("faregate: usage queue full (%d records); not sent: %s", len(self.queue), json.dumps(record))
            return
        self.queue.append(record)
        self._start_flusher()
        if len(self.queue) >= self.batch_max and self._wake is not None:
            self._wake.set()

    def _start_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._flusher = loop.create_task(self._flush_forever(), name="faregate-usage-flusher")

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client, self._client_loop = httpx.AsyncClient(), loop
        return self._client

    async def _flush_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_secs)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while self.queue:
                self.in_flight = self.queue[: self.batch_max]
                del self.queue[: len(self.in_flight)]
                try:
                    await self._send(self.in_flight)
                except Exception:
                    log.exception("faregate: usage batch not sent: %s", json.dumps(self.in_flight))
                self.in_flight = []

    async def _send(self, batch: list[dict]) -> None:
        """Post one batch, the same batch again on a retryable failure, up to the attempt bound."""
        delay, why = 0.5, ""
        for attempt in range(1, self.send_attempts + 1):
            try:
                answer = await self._http().post(
                    f"{self.url}/v1/usage",
                    json={"records": batch},
                    headers={"authorization": f"Bearer {self.token}"},
                    timeout=30,
                )
                if answer.status_code == 202:
                    return
                why = f"HTTP {answer.status_code}: {answer.text[:2000]}"
                if answer.status_code < 500 and answer.status_code != 429:
                    break  # Faregate will never take this batch as it is
            except httpx.HTTPError as error:
                why = f"{type(error).__name__}: {error}"
            if attempt < self.send_attempts:
                log.warning("faregate: usage batch of %d not sent (%s); attempt %d, retrying", len(batch), why, attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        log.error("faregate: giving up on %d usage records (%s); not sent: %s", len(batch), why, json.dumps(batch))

    def _log_unsent_at_exit(self) -> None:
        unsent = self.in_flight + self.queue
        if unsent:
            log.error("faregate: stopping with %d usage records not sent: %s", len(unsent), json.dumps(unsent))


def _attribution_headers(attribution: dict) -> dict:
    names = {"org": "org", "team": "team", "user": "user", "key_id": "key", "project": "project"}
    return {f"x-faregate-{names[field]}": str(value) for field, value in attribution.items() if value}


def _without_provider(model, provider: str | None = None) -> str | None:
    """``anthropic/claude-sonnet-4-5`` -> ``claude-sonnet-4-5`` (the name Faregate's catalog uses)."""
    if not isinstance(model, str) or not model:
        return None
    prefix, _, rest = model.partition("/")
    if rest and (provider is None or prefix == provider):
        return rest
    return model


def _faregate_error(answer: httpx.Response) -> dict | None:
    """The ``error`` object of a Faregate refusal (``{"error": {...}}``), or None if it is not one."""
    try:
        error = answer.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, dict) and isinstance(error.get("message"), str) else None


def _error_status(code) -> int:
    try:
        status = int(code)
    except (TypeError, ValueError):
        return 502
    return status if 400 <= status <= 599 else 502


def _count(value) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _tokens(usage: dict) -> dict:
    """LiteLLM's usage (OpenAI's shape for every provider: ``prompt_tokens`` includes cache reads
    and writes, ``completion_tokens`` includes reasoning) as Faregate's disjoint classes."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cache_read = _count(prompt_details.get("cached_tokens")) or _count(usage.get("cache_read_input_tokens"))
    cache_write = _count(usage.get("cache_creation_input_tokens")) or _count(
        prompt_details.get("cache_creation_tokens")
    )
    split = prompt_details.get("cache_creation_token_details") or {}
    write_1h = min(_count(split.get("ephemeral_1h_input_tokens")), cache_write)
    reasoning = _count(completion_details.get("reasoning_tokens"))
    completion = _count(usage.get("completion_tokens"))
    return {
        "input": max(0, _count(usage.get("prompt_tokens")) - cache_read - cache_write),
        "output": max(0, completion - reasoning),
        "cache_read": cache_read,
        "cache_write_5m": cache_write - write_1h,
        "cache_write_1h": write_1h,
        "reasoning": min(reasoning, completion),
    }


proxy_handler_instance = FaregateCallback()
