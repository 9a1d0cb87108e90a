"""CSV import and export of the unsubscribed list."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rules import csvio
from rules.model import InvalidValue, SmsType, Source, Status
from rules.service import OptOutService

TOLL_FREE = "+18005550199"
SHORT = "898211"
M = SmsType.MARKETING


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[OptOutService]:
    svc = await OptOutService.open(store_url)
    await svc.create_address(TOLL_FREE)
    await svc.create_address(SHORT)
    yield svc
    await svc.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
        ("2023-11-14T17:13:20-05:00", 1_700_000_000.0),
        ("2023-11-14T22:13:20", 1_700_000_000.0),  # no zone: UTC
        ("2023-11-14", 1_699_920_000.0),
    ],
)
def test_since_formats(text: str, expected: float) -> None:
    assert csvio.parse_since(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "-5", "nan", "1e20", "2023-13-40"])
def test_bad_since_is_refused(text: str) -> None:
    with pytest.raises(InvalidValue):
        csvio.parse_since(text)


async def test_import_reports_bad_rows_and_lands_good_ones(service: OptOutService) -> None:
    lines = [
        "phone_number,inbound_address,since\n",
        "+14155550100,+18005550199,2024-05-01T12:00:00Z\n",  # 2: good
        "(604) 555-0100,898211,\n",  # 3: good, since = now
        "not-a-number,+18005550199,\n",  # 4: bad number
        "+14155550101,+18885550100,\n",  # 5: unknown address
        "+18765550100,+18005550199,\n",  # 6: Jamaica
        "+14155550102,+18005550199,someday\n",  # 7: bad date
        "+14155550103,+18005550199\n",  # 8: wrong column count
        "\n",  # 9: blank, ignored
        "+14155550100,+18005550199,1700000000\n",  # 10: repeated in the file
        "+14155550104,+18005550199,1700000000\n",  # 11: good
    ]
    report = await service.import_csv(lines, actor="ops")
    assert report.imported == 3
    assert report.skipped == 1
    assert [line for line, _ in report.errors] == [4, 5, 6, 7, 8]
    assert report.error_count == 5
    messages = dict(report.errors)
    assert "Jamaica" in messages[6]
    assert "does not exist" in messages[5]

    assert service.unsubscribed_count() == 3
    assert not service.decide("app", M, "+16045550100").allowed
    page, _ = await service.list_unsubscribed(phone_number="+14155550100")
    assert page[0].since == 1_714_564_800.0 and page[0].source is Source.IMPORT
    records, _ = await service.list_records()
    assert {(r.source, r.status, r.actor) for r in records} == {
        (Source.IMPORT, Status.UNSUBSCRIBED, "ops")
    }
    assert len(records) == 3

    again = await service.import_csv(lines)  # importing twice changes nothing
    assert (again.imported, again.skipped) == (0, 4)


async def test_headerless_and_reordered_columns(service: OptOutService) -> None:
    headerless = await service.import_csv(["4155550100,8005550199\n"])
    assert headerless.imported == 1 and headerless.errors == ()
    reordered = await service.import_csv(
        ["since,inbound_address,phone_number\n", "1700000000,898211,4155550100\n"]
    )
    assert reordered.imported == 1 and reordered.errors == ()
    bad_header = await service.import_csv(["phone_number,address\n", "4155550100,898211\n"])
    assert bad_header.imported == 0 and bad_header.errors[0][0] == 1


async def test_export_round_trips_through_import(service: OptOutService, tmp_path: Path) -> None:
    for i in range(7):
        await service.unsubscribe(f"+1415555{i:04d}", TOLL_FREE, source=Source.API)
    await service.handle_mo(SHORT, "+16045550100", "STOP")

    out = io.StringIO()
    rows = await csvio.export_to(service, out)
    assert rows == 8
    text = out.getvalue()
    assert text.splitlines()[0] == "phone_number,inbound_address,since"

    path = tmp_path / "export.csv"
    path.write_text(text)
    fresh = await OptOutService.open(f"sqlite:///{tmp_path}/fresh.db")
    try:
        await fresh.create_address(TOLL_FREE)
        await fresh.create_address(SHORT)
        report = await csvio.import_file(fresh, path)
        assert (report.imported, report.errors) == (8, ())
        original, _ = await service.list_unsubscribed()
        copied, _ = await fresh.list_unsubscribed()
        assert [(u.phone_number, u.inbound_address, int(u.since)) for u in copied] == [
            (u.phone_number, u.inbound_address, int(u.since)) for u in original
        ]
    finally:
        await fresh.close()


async def test_import_file_tolerates_an_excel_bom(service: OptOutService, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffphone_number,inbound_address,since\r\n+14155550100,898211,\r\n".encode()
    )
    report = await csvio.import_file(service, path)
    assert (report.imported, report.errors) == (1, ())


async def test_large_import_spans_several_batches(
    service: OptOutService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rules.service.bulk as service_module

    monkeypatch.setattr(service_module, "IMPORT_BATCH", 100)
    lines = ["phone_number,inbound_address\n"] + [
        f"+1212555{i:04d},{TOLL_FREE}\n" for i in range(1050)
    ]
    report = await service.import_csv(lines)
    assert report.imported == 1050
    assert service.unsubscribed_count() == 1050
    exported = [line async for line in service.export_csv()]
    assert len(exported) == 1051


async def test_scope_memo_never_lets_other_nanp_countries_in(service: OptOutService) -> None:
    lines = ["phone_number,inbound_address\n"] + [
        f"{n},{TOLL_FREE}\n"
        for n in ("+14155550100", "+18765550100", "+14155550101", "+18765550101", "+12425550100")
    ]
    report = await service.import_csv(lines)
    assert report.imported == 2
    assert [line for line, _ in report.errors] == [3, 5, 6]
