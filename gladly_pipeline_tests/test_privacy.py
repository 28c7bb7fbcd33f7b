"""Personal data hashed in the analysis-ready tables: stable, joinable, nothing left."""

import pyarrow.parquet as pq
import pytest
from dagster import materialize

from gladly_pipeline.assets.analytics import analytics_tables
from gladly_pipeline.assets.raw import contacts, conversations, messages
from gladly_pipeline.assets.reference import agents, inboxes, topics
from gladly_pipeline.privacy import Pseudonymizer
from gladly_pipeline.resources import DataRoot
from gladly_pipeline.storage import TableStore

from .conftest import make_resources

SALT = "test-salt-0123456789abcdef"


def build(emu, root, **data_root):
    resources = make_resources(emu, root)
    resources["data_root"] = DataRoot(path=str(root), **data_root)
    for day in ("2026-03-07", "2026-03-08"):
        assert materialize([messages, conversations, contacts], partition_key=day,
                           resources=resources).success
    assert materialize([agents, inboxes, topics, analytics_tables], resources=resources).success
    store = TableStore(root)
    return {name: pq.read_table(store.analytics(name)).to_pandas()
            for name in ("messages", "conversations", "contacts")}


def test_hashing_removes_names_emails_and_phones_but_keeps_joins(emulator, tmp_path):
    plain = build(emulator, tmp_path / "plain")
    hashed = build(emulator, tmp_path / "hashed", hash_personal_data=True,
                   personal_data_salt=SALT)
    again = build(emulator, tmp_path / "again", hash_personal_data=True,
                  personal_data_salt=SALT)

    secrets = set()
    for row in plain["contacts"].itertuples():
        secrets |= {v for v in (row.name, row.primary_email, row.primary_phone)
                    if isinstance(v, str)}
    assert secrets
    for table in hashed.values():
        text = table.astype(str).to_csv()
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{len(leaked)} personal values left in the hashed tables"

    # Stable across runs, and the contact keys still join.
    assert hashed["contacts"]["primary_email"].equals(again["contacts"]["primary_email"])
    assert set(hashed["conversations"]["contact_id"]) <= set(hashed["contacts"]["contact_id"])
    assert hashed["contacts"]["name"].dropna().str.startswith("h:").all()


def test_hashing_without_a_salt_fails_with_a_message_naming_the_variable():
    with pytest.raises(ValueError, match="GLADLY_PII_SALT"):
        DataRoot(hash_personal_data=True).pseudonymizer()


def test_same_email_or_phone_hashes_the_same_in_text_and_columns():
    p = Pseudonymizer(SALT)
    assert p.text("write to Ada@Example.com") == f"write to {p.value('ada@example.com')}"
    assert p.text("call (555) 010-0123") == f"call {p.value('5550100123')}"
    assert p.text("or +15550100123.") == f"or {p.value('+15550100123')}."


def test_run_logs_hold_no_names_emails_phones_or_message_text(
    emulator, tmp_path, caplog, capfd
):
    caplog.set_level("DEBUG")
    build(emulator, tmp_path)
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "Wrote" in logs, "the run's own log lines must be in what is checked"
    personal = set()
    for profile in emulator.data.customers.values():
        personal.add(profile.get("name"))
        personal |= {e["original"] for e in profile.get("emails", [])}
        personal |= {p["normalized"] for p in profile.get("phones", []) if p.get("normalized")}
    texts = {i["content"].get("content") for i in emulator.data.items}
    leaked = [v for v in (personal | texts) if isinstance(v, str) and len(v) > 5 and v in logs]
    assert not leaked, f"{len(leaked)} personal values or message texts in the logs"
