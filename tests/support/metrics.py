"""Scraping a service's `/metrics` over HTTP and reading it with prometheus-client's parser."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample, by its name as exposed (`_total`, `_count`, ... included)."""

    samples: tuple[Sample, ...]
    types: dict[str, str]
    """Metric family name -> type (counter, gauge, histogram, ...)."""

    def values(self, metric: str, /, **labels: str) -> list[float]:
        """The values of the samples `metric` whose labels include `labels`."""
        return [
            s.value
            for s in self.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The one sample that matches (None: none; AssertionError: several)."""
        found = self.values(metric, **labels)
        assert len(found) <= 1, f"{metric}{labels}: {len(found)} samples"
        return found[0] if found else None

    def label_values(self) -> set[str]:
        return {v for s in self.samples for v in s.labels.values()}


async def scrape(port: int | None, host: str = "127.0.0.1") -> Scrape:
    assert port is not None, "the health server has not started"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{host}:{port}/metrics") as answer,
    ):
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = await answer.text()
    samples: list[Sample] = []
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples.extend(family.samples)
    return Scrape(tuple(samples), types)


async def ready_status(port: int | None, host: str = "127.0.0.1") -> int:
    """The status `/readyz` answers (0 when it cannot be reached)."""
    assert port is not None, "the health server has not started"
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/readyz") as answer,
        ):
            return answer.status
    except aiohttp.ClientError:
        return 0
