"""The rate limiter every remote provider shares: its computed waits, on an injected clock.

Nothing here sleeps: the limiter's clock is a counter the test moves, and each test
asserts on :meth:`RateLimiter.wait_time`, the seconds it would hold the next request.
The last tests check that real responses (the OpenAI SDK, a JSON provider) feed their
``x-ratelimit-*`` headers into it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cachedembed import ConfigurationError
from cachedembed.embedding_functions import JinaEmbeddingFunction, OpenAIEmbeddingFunction
from cachedembed.embedding_functions._limits import RateLimiter, parse_duration
from tests.providers import test_jina, test_openai
from tests.providers.fakes import serve
from tests.providers.loopback import Reply, Request
from tests.providers.scenarios import FAST, TEXTS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("12ms", 0.012),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("20", 20.0),
    ],
)
def test_openai_reset_durations_are_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 s", "1x", "-"])
def test_unreadable_durations_are_ignored(text: str) -> None:
    assert parse_duration(text) is None


def test_requests_per_minute_paces_evenly_after_a_one_second_burst(clock: Clock) -> None:
    limiter = RateLimiter(requests_per_minute=120, clock=clock)  # 2 per second, bucket of 2
    limiter.acquire().succeeded()
    limiter.acquire().succeeded()
    assert limiter.wait_time() == pytest.approx(0.5)
    clock.now += 0.2
    assert limiter.wait_time() == pytest.approx(0.3)


def test_tokens_are_estimated_then_corrected_by_reported_usage(clock: Clock) -> None:
    limiter = RateLimiter(tokens_per_minute=6000, clock=clock)  # 100 a second, bucket of 100
    limiter.acquire(tokens=100).succeeded()
    assert limiter.wait_time(tokens=100) == pytest.approx(1.0)
    limiter.settle(estimated=100, reported=50)  # it cost half the estimate
    assert limiter.wait_time(tokens=100) == pytest.approx(0.5)


def test_a_request_larger_than_the_bucket_waits_for_a_full_one_then_runs_into_debt(
    clock: Clock,
) -> None:
    limiter = RateLimiter(tokens_per_minute=6000, clock=clock)
    assert limiter.wait_time(tokens=1000) == 0.0
    limiter.acquire(tokens=1000).succeeded()
    # 900 tokens of debt plus a full bucket of 100 before the next such request.
    assert limiter.wait_time(tokens=1000) == pytest.approx(10.0)


def test_retry_after_pauses_every_request_of_the_instance(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)
    limiter.acquire().throttled(retry_after=2.0)
    assert limiter.wait_time() == pytest.approx(2.0)
    clock.now += 1.5
    assert limiter.wait_time() == pytest.approx(0.5)


def test_concurrency_halves_once_per_round_of_429s_and_grows_by_one_per_success(
    clock: Clock,
) -> None:
    limiter = RateLimiter(max_concurrency=8, clock=clock)
    first, second = limiter.acquire(), limiter.acquire()
    first.throttled(None)
    second.throttled(None)  # sent before the cut: the same round, no second cut
    assert limiter.window == 4
    limiter.acquire().throttled(None)
    assert limiter.window == 2
    limiter.acquire().succeeded()
    assert limiter.window == 3 and limiter.throttled_count == 3
    for _ in range(10):
        limiter.acquire().succeeded()
    assert limiter.window == 8


def test_remaining_requests_header_paces_at_the_announced_limit(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)  # nothing configured: the server's headers decide
    limiter.acquire().succeeded(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "100ms",
        }
    )
    assert limiter.wait_time() == pytest.approx(0.1)  # 600/min: one every 0.1 s
    clock.now += 0.04
    assert limiter.wait_time() == pytest.approx(0.06)


def test_remaining_tokens_header_counts_what_is_still_in_flight(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)
    in_flight = limiter.acquire(tokens=300)
    limiter.acquire(tokens=200).succeeded(
        {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "1000"}
    )
    # 1000 left at the server, 300 of them already promised to the request in flight.
    assert limiter.wait_time(tokens=900) == pytest.approx(0.2)  # 1000 tokens a second
    in_flight.succeeded()


def test_remaining_zero_without_a_limit_waits_for_the_reset(clock: Clock) -> None:
    limiter = RateLimiter(clock=clock)
    limiter.acquire().succeeded(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    )
    assert limiter.wait_time() == pytest.approx(360.0)


def test_a_configured_rate_is_kept_when_headers_announce_another(clock: Clock) -> None:
    limiter = RateLimiter(requests_per_minute=60, clock=clock)
    limiter.acquire().succeeded(
        {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "5000"}
    )
    assert limiter.wait_time() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"requests_per_minute": 0}, "requests_per_minute must be a positive number"),
        ({"tokens_per_minute": -5}, "tokens_per_minute must be a positive number"),
        ({"max_concurrency": 0}, "max_concurrency must be a positive integer"),
    ],
)
def test_nonsense_limits_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RateLimiter(**options)


def test_provider_constructors_take_the_limits() -> None:
    ef = OpenAIEmbeddingFunction(api_key="k", requests_per_minute=500, tokens_per_minute=1e6)
    assert ef.limiter.requests_per_minute == 500 and ef.limiter.tokens_per_minute == 1e6
    with pytest.raises(ConfigurationError, match="requests_per_minute"):
        JinaEmbeddingFunction(api_key="k", requests_per_minute=0)


# -- the headers of real responses reach the limiter --------------------------------------

PACING = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
}


def with_headers(handler: Any, headers: dict[str, str]) -> Any:
    def answer(request: Request) -> Reply:
        reply = handler(request)
        reply.headers.update(headers)
        return reply

    return answer


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    fake = test_openai.OpenAIFake()
    monkeypatch.setenv("OPENAI_API_KEY", fake.key)
    with serve(fake) as server:
        server.handler = with_headers(fake, PACING)
        yield fake, server.url


def test_openai_sdk_responses_pace_the_limiter(
    openai_server: tuple[Any, str], clock: Clock
) -> None:
    fake, url = openai_server
    ef = OpenAIEmbeddingFunction(model_name=fake.model, api_base=f"{url}/v1", retry=FAST)
    ef.limiter = RateLimiter(clock=clock)
    ef(TEXTS[:2])
    assert ef.limiter.wait_time() == pytest.approx(1.0)


def test_json_provider_responses_pace_the_limiter(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    fake = test_jina.JinaFake()
    monkeypatch.setenv("JINA_API_KEY", fake.key)
    with serve(fake) as server:
        server.handler = with_headers(fake, PACING)
        ef = JinaEmbeddingFunction(model_name=fake.model, api_base=server.url, retry=FAST)
        ef.limiter = RateLimiter(clock=clock)
        ef(TEXTS[:2])
    assert ef.limiter.wait_time() == pytest.approx(1.0)
