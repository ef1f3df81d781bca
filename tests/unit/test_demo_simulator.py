"""The processor simulator of ``dsr demo`` starts whatever else listens on its old fixed port."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from dsr.config import Settings
from dsr.demo import processor_sim
from dsr.runtime import load_datamap

OLD_PORT = 5081  # where the demo's simulator was bound, fixed, before


@pytest.fixture
def old_port_taken() -> Iterator[None]:
    """A listening socket on the old port (when something else holds it already, that does as well)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        try:
            taken.bind(("127.0.0.1", OLD_PORT))
            taken.listen()
        except OSError:
            pass  # taken by another process: occupied all the same
        yield


def test_the_demo_simulator_starts_on_a_free_port_when_the_old_one_is_taken(old_port_taken, monkeypatch):
    monkeypatch.delenv("DSR_VONAGE_SIM_PORT", raising=False)
    monkeypatch.setenv("DSR_VONAGE_URL", f"http://127.0.0.1:{OLD_PORT}/opendsr")  # left over from an earlier run
    handle = processor_sim.serve_for_demo(os.environ)  # as `dsr demo` calls it
    try:
        assert handle.port != OLD_PORT
        assert os.environ["DSR_VONAGE_URL"] == handle.url == f"http://127.0.0.1:{handle.port}/opendsr"
        assert os.environ["DSR_VONAGE_SECRET"]  # made up when not given
        with urllib.request.urlopen(f"{handle.url}/discovery", timeout=5) as answer:  # noqa: S310 (loopback)
            assert answer.status == 200 and json.load(answer)
        # The data map the demo loads sends the Vonage store's requests to this simulator.
        assert load_datamap(Settings()).stores["vonage"].setting("url") == handle.url
    finally:
        handle.shutdown()


def test_a_port_that_is_not_a_number_is_named():
    with pytest.raises(ValueError, match="DSR_VONAGE_SIM_PORT must be a port number"):
        processor_sim.serve_for_demo({"DSR_VONAGE_SIM_PORT": "50x1"})


def test_the_demo_vonage_store_keeps_the_labels_of_the_data_map() -> None:
    import yaml

    from dsr.config import DEFAULT_DATAMAP
    from dsr.demo import processor_sim

    raw = yaml.safe_load(DEFAULT_DATAMAP.read_text(encoding="utf-8"))
    store = processor_sim.with_vonage_store(raw, "http://127.0.0.1:1/opendsr")["stores"]["vonage"]
    mapped = raw["stores"]["vonage"]
    assert store["label"] == mapped["label"]
    assert store["tables"]["messages"]["label"] == mapped["tables"]["messages"]["label"]
    to_number = store["tables"]["messages"]["fields"]["to_number"]
    assert to_number["mask"] == "last3"
    assert to_number["label"] == mapped["tables"]["messages"]["fields"]["to_number"]["label"]
