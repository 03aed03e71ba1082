"""The controller's pure parts: app URIs, the `app` command words, the intent's JSON form
and the SQLite store (a real SQLite file in a temp folder; no devices)."""
from __future__ import annotations

import os
import stat

import pytest

from flexnet_lab.control.intent import AppRecord, DeviceIntent, Intent
from flexnet_lab.control.store import SqliteStore
from flexnet_lab.control.uri import AppUri, parse_uri
from flexnet_lab.errors import AppError
from flexnet_lab.lab.appcmd import AppCommandError, app_request
from flexnet_lab.program import library
from flexnet_lab.targets.ebpf_datapath import Entry


def test_uri_parses_and_prints():
    u = parse_uri("flexnet://acme/cm-1")
    assert u == AppUri("acme", "cm-1") and str(u) == "flexnet://acme/cm-1"
    assert parse_uri("flexnet://infra/routing").infra


@pytest.mark.parametrize("bad", ["", "acme/cm", "flexnet:/acme/cm", "flexnet://acme",
                                 "flexnet://acme/cm/x", "flexnet://Acme/cm", "flexnet://a/",
                                 "flexnet://1a/b", "x" * 5000, 42, None, ["flexnet://a/b"]])
def test_malformed_uris_refused_with_a_short_excerpt(bad):
    with pytest.raises(AppError) as err:
        parse_uri(bad)
    assert len(str(err.value)) < 200


def test_reserved_tenant():
    with pytest.raises(AppError, match="reserved"):
        parse_uri("flexnet://infra/x", tenant_ok=False)


def test_app_command_words():
    op, args = app_request(["deploy", "flexnet://a/b", "count_min", "--on", "l1,h8",
                            "--replicas", "2"])
    assert op == "deploy" and args == {"uri": "flexnet://a/b", "spec": {
        "function": "count_min", "on": ["l1", "h8"], "replicas": 2}}
    assert app_request(["migrate", "flexnet://a/b", "--to", "h3"]) == (
        "migrate", {"uri": "flexnet://a/b", "to": "h3"})
    assert app_request(["scale", "flexnet://a/b", "--to", "3"])[1]["to"] == 3
    assert app_request(["events", "--since", "7"]) == ("events", {"since": 7})
    for bad in ([], ["deploy"], ["scale", "u", "--to", "x"], ["list", "x"], ["frob"],
                ["deploy", "u", "f", "--delta", "d.yaml"]):
        with pytest.raises(AppCommandError):
            app_request(bad)


def _intent(name="l1", entries=()):
    return DeviceIntent(name, "ebpf", library.infrastructure(), frozenset(entries), 17)


def test_device_intent_json_round_trip():
    e = Entry("l3_fwd", ((0x0A000001, 32),), "forward", (3,), 0)
    di = _intent(entries=[e])
    assert DeviceIntent.from_json(di.to_json()) == di
    rec = AppRecord("flexnet://a/b", {"function": "count_min"}, ("l1",), ("t",), ("a",),
                    ("m",), ("why",), 10, 2, 1.5)
    assert AppRecord.from_json(rec.to_json()) == rec


def test_the_stores_cached_device_document_is_the_device_intents_json():
    """The store encodes a switch's program and entries once and writes the rest of the
    document around them: it must stay DeviceIntent.to_json, key for key."""
    import json

    from flexnet_lab.control.store import _Docs
    docs = _Docs()
    e = Entry("l3_fwd", ((0x0A000001, 32),), "forward", (3,), 0)
    for di in (_intent(entries=[e]), _intent("l2"), _intent(entries=[e])):
        text = docs.device(di)
        assert json.loads(text) == di.to_json()
        assert DeviceIntent.from_json(json.loads(text)) == di


def test_store_pending_commit_abort(tmp_path):
    path = str(tmp_path / "intent.db")
    st = SqliteStore(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    a, b = _intent(), _intent(entries=[Entry("l3_fwd", ((1, 32),), "forward", (1,), 0)])
    st.put_devices([a])
    cid = st.begin("change", Intent({"l1": a}, {}), Intent({"l1": b}, {}))
    assert [p.id for p in st.pending()] == [cid]
    # a crash here: the intent is still the before-state
    assert SqliteStore(path).load().devices["l1"] == a
    st.commit(cid, Intent({"l1": b}, {"flexnet://a/b": None}))
    assert st.pending() == [] and SqliteStore(path).load().devices["l1"] == b
    cid2 = st.begin("refused", Intent({"l1": b}, {}), Intent({"l1": None}, {}))
    st.abort(cid2, "the device refused")
    assert SqliteStore(path).load().devices["l1"] == b
    assert [c["status"] for c in st.changes()] == ["done", "rolled back"]
    st.log("repair", "l1", "re-inserted entry")
    assert st.events()[-1].kind == "repair"
