"""Hostile uploads from issue 13, built on the fly at the issue's sizes.

The spreadsheets are zips of hand-written XML: a real spreadsheet program would never write
them, which is the point.
"""

from __future__ import annotations

import io
import zipfile
import zlib

NEWLINES_PER_CHUNK = 16 * 1024 * 1024
# 1.5 GiB of newlines, about 1.5 MB of gzip: deflate tops out near 1030x, just over the 1000x
# guard, and the decompressed size is over the 1 GiB import limit, so only the lines cap (or
# the old code's minutes of reading empty lines) ends it.
GZIP_BOMB_BYTES = 1536 * 1024 * 1024


def gzip_of_newlines(total: int = GZIP_BOMB_BYTES) -> bytes:
    """A gzip file of ``total`` newlines, compressed a chunk at a time (bounded memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    chunk = b"\n" * NEWLINES_PER_CHUNK
    out = io.BytesIO()
    left = total
    while left:
        size = min(left, NEWLINES_PER_CHUNK)
        out.write(compressor.compress(chunk[:size]))
        left -= size
    out.write(compressor.flush())
    return out.getvalue()


CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml"
 ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml"
 ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
</Types>"""
ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Target="xl/workbook.xml"
 Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>
</Relationships>"""
WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"
 xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets>
</workbook>"""
WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Target="worksheets/sheet1.xml"
 Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"/>
</Relationships>"""
SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
)


def inline_cell(reference: str, text: str) -> str:
    return f'<c r="{reference}" t="inlineStr"><is><t>{text}</t></is></c>'


def xlsx_from_sheet_xml(sheet: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", ROOT_RELS)
        archive.writestr("xl/workbook.xml", WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
    return buffer.getvalue()


def xlsx_one_wide_row(cells: int = 2_000_000) -> bytes:
    """A header row of ``cells`` cells (no cell references, so no column cap in the XML)."""
    row = "<c><v>1</v></c>" * cells
    sheet = f'{SHEET_HEAD}<sheetData><row r="1">{row}</row></sheetData></worksheet>'
    return xlsx_from_sheet_xml(sheet.encode())


def xlsx_huge_dimension(dimension: str = "A1:XFD100000") -> bytes:
    """Two real rows in a sheet that declares ``dimension``; what a reader pads rows up to."""
    rows = (
        f'<row r="1">{inline_cell("A1", "ticket")}{inline_cell("B1", "category")}</row>'
        f'<row r="2">{inline_cell("A2", "Printer jammed")}{inline_cell("B2", "hardware")}</row>'
    )
    sheet = f'{SHEET_HEAD}<dimension ref="{dimension}"/><sheetData>{rows}</sheetData></worksheet>'
    return xlsx_from_sheet_xml(sheet.encode())
