"""The erasure plan comes from the data map (issue 13): per table delete, empty fields or keep, with the
reason, provision and retention rule, depending on whether the subject's contract has ended."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dsr.config import DEFAULT_DATAMAP
from dsr.datamap.loader import load
from dsr.datamap.model import DataMap
from dsr.domain.erasure import BY_CONNECTOR, BY_PROCESSOR, plan
from dsr.stores.base import TableErasure


@pytest.fixture(scope="module")
def datamap(tmp_path_factory: pytest.TempPathFactory) -> DataMap:
    return load(DEFAULT_DATAMAP, instance_dir=Path(tmp_path_factory.mktemp("instance")))


def _methods(datamap: DataMap, *, contract_ended: bool) -> dict[tuple[str, str], str]:
    return {(s.store, s.table): s.method for p in plan(datamap, contract_ended=contract_ended).values()
            for s in p.steps}


def test_while_the_contract_runs_only_what_the_contract_does_not_need_goes(datamap: DataMap) -> None:
    methods = _methods(datamap, contract_ended=False)
    assert methods[("portal_db", "support_tickets")] == "delete"  # support cases: erased on request
    assert methods[("portal_db", "invited_users")] == "delete"
    assert methods[("analytics", "events")] == "delete"  # consent-based
    assert methods[("media", "voicemails")] == "delete"
    assert methods[("portal_db", "payment_methods")] == "retain"  # needed while the contract runs
    assert methods[("portal_db", "api_usage")] == "retain"
    assert methods[("portal_db", "accounts")] == "retain"
    assert methods[("portal_db", "invoices")] == "retain"  # statutory duty
    assert methods[("portal_db", "call_records")] == "retain"
    assert methods[("vonage", "messages")] == "delete"  # asked of the processor, with the same plan


def test_after_the_contract_the_contract_data_goes_and_statutory_data_stays(datamap: DataMap) -> None:
    running, ended = _methods(datamap, contract_ended=False), _methods(datamap, contract_ended=True)
    assert ended[("portal_db", "payment_methods")] == ended[("portal_db", "api_usage")] == "delete"
    assert ended[("portal_db", "invoices")] == ended[("portal_db", "call_records")] == "retain"
    # The account's own rule keeps it until 30 days after the contract ends (the register dates it).
    assert ended[("portal_db", "accounts")] == "retain"
    assert {k for k, v in running.items() if v != ended[k]} == {
        k for k, v in ended.items() if v == "delete" and running[k] == "retain"}


def test_each_kept_table_says_why_under_which_provision_and_until_which_rule(datamap: DataMap) -> None:
    steps = {(s.store, s.table): s for p in plan(datamap, contract_ended=True).values() for s in p.steps}
    invoices = steps[("portal_db", "invoices")]
    assert invoices.provision == datamap.categories["invoices"].statutory_retention
    assert invoices.until in datamap.retention and invoices.kept and invoices.kept["de"] and invoices.kept["en"]
    calls = steps[("portal_db", "call_records")]
    assert calls.until == "traffic_billing" and calls.provision == "§§ 9, 10 TDDDG"
    assert calls.kept == datamap.stores["portal_db"].tables["call_records"].erasure.reason  # type: ignore[union-attr]
    staff = steps[("portal_db", "employees")]
    assert staff.method == "retain" and staff.kept  # our staff's data, not the subject's
    for step in steps.values():
        assert (step.method == "retain") == (step.action == TableErasure("retain"))
        if step.method == "retain":
            assert step.kept, step


def test_stores_say_who_carries_out_their_part(datamap: DataMap) -> None:
    plans = plan(datamap, contract_ended=True)
    assert plans["portal_db"].by == BY_CONNECTOR and plans["vonage"].by == BY_PROCESSOR
    assert plans["vonage"].actions() == {"messages": TableErasure("delete"),
                                         "call_recordings_meta": TableErasure("delete")}
    actions = plans["portal_db"].actions()
    assert actions["support_tickets"] == TableErasure("delete") and actions["invoices"] == TableErasure("retain")
    assert plans["web_logs"].changes_anything is False  # the logs are kept until their 7 days are over


def test_the_data_map_decides_not_the_code(datamap: DataMap) -> None:
    categories = dict(datamap.categories)
    categories["invoices"] = dataclasses.replace(categories["invoices"], erasure="on_request")
    tables = dict(datamap.stores["portal_db"].tables)
    tables["invoices"] = dataclasses.replace(tables["invoices"], erasure=None)
    tables["invited_users"] = dataclasses.replace(
        tables["invited_users"], erasure=dataclasses.replace(tables["accounts"].erasure, method="null",  # type: ignore[arg-type]
                                                             fields=("email",), replacements={"email": "erased"}))
    stores = {**datamap.stores, "portal_db": dataclasses.replace(datamap.stores["portal_db"], tables=tables)}
    changed = dataclasses.replace(datamap, categories=categories, stores=stores)
    actions = plan(changed, contract_ended=False)["portal_db"].actions()
    assert actions["invoices"] == TableErasure("delete")
    assert actions["invited_users"] == TableErasure("null", ("email",), {"email": "erased"})
