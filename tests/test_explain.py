"""`p11spy explain` and the code knowledge base: every code of the reference notes is answered
with the right number, each spelling a user types is read, ambiguous numbers show every
reading in a sensible order, and the command fails cleanly on codes it does not know."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder import codes
from p11spy.decoder.codes import SYSTEMS, Code, by_name, explain_rv, explain_sw, lookup
from p11spy.decoder.knowledge.ckr import CKR as CKR_TEXTS
from p11spy.facts.pkcs11.constants import FAMILIES

REFERENCE = Path(__file__).resolve().parent / "reference"
ERROR_CODES = REFERENCE / "error-codes.md"
FIELD_NOTES = REFERENCE / "field-notes.md"
P11SPY = str(Path(sys.executable).parent / "p11spy")
UNKNOWN_TAIL = "not a CKR, status word, OpenSC, PC/SC, GSKit, CTGSK, AMQ or MQ code"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=60)


# --- reading the reference notes ----------------------------------------------------------------

def _text(path: Path) -> str:
    assert path.is_file(), f"reference notes missing: {path}"
    return path.read_text(encoding="utf-8")


def _section(start: str, end: str | None) -> str:
    text = _text(ERROR_CODES)
    i = text.index(start)
    return text[i:text.index(end, i)] if end else text[i:]


def _tables(section: str) -> list[list[list[str]]]:
    """Each markdown table of a section as its body rows (header and rule dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip().strip("`").replace("**", "").strip() for c in
                     line.strip().strip("|").split("|")]
            current.append(cells)
        elif current:
            tables.append(current[2:])
            current = []
    return tables


def _rows(start: str, end: str | None, table: int = 0) -> list[list[str]]:
    return _tables(_section(start, end))[table]


def opensc_rows() -> list[list[str]]:
    return _rows("## 1.", "## 2.")


def ckr_rows() -> list[list[str]]:
    return _rows("## 2.", "## 3.")


def sw_rows() -> list[list[str]]:
    return _rows("## 3.", "## 4.")


def pcsc_rows() -> list[list[str]]:
    return _rows("## 4.", "## 5.")


def pcsc_flag_rows() -> list[tuple[str, int]]:
    flags = []
    for row in _rows("## 4.", "## 5.", table=1):
        flags += [(row[0], int(row[1], 16)), (row[3], int(row[4], 16))]
    return flags


def gskit_rows() -> list[list[str]]:
    return _rows("### 5.2", "### 5.3")


def ctgsk_rows() -> list[list[str]]:
    return _rows("### 5.3", "### 5.4")


def amq_rows() -> list[list[str]]:
    return _rows("### 5.4", None)


def _one(name: str, system: str) -> Code:
    found = [c for c in by_name(name) if c.system == system]
    assert found, f"{name}: no {system} entry"
    return found[0]


def _names(matches: list[codes.Match]) -> list[str]:
    return [m.code.name for m in matches]


def test_reference_tables_have_the_expected_sizes():
    # A parser that silently reads nothing would make every test below pass; pin the sizes.
    assert len(opensc_rows()) == 85
    assert len(ckr_rows()) == 105
    assert len(sw_rows()) == 54
    assert len(pcsc_rows()) == 68
    assert len(pcsc_flag_rows()) == 12
    assert len(gskit_rows()) == 70
    assert len(ctgsk_rows()) == 5
    assert len(amq_rows()) == 15


# --- every code of the reference, with its number -------------------------------------------

def test_every_opensc_error_with_its_value_and_ckr():
    for name, value, _label, _meaning, mapping in opensc_rows():
        code = _one(name, "OpenSC")
        assert code.value == int(value), name
        assert name in _names(lookup(value)), value
        assert name in _names(lookup(f"opensc:{value}")), value
        assert code.ckr == mapping.split()[0], f"{name} maps to {code.ckr}, notes say {mapping}"
        assert by_name(code.ckr) and by_name(code.ckr)[0].system == "CKR"


def test_opensc_context_overrides_are_told():
    assert "CKR_FUNCTION_FAILED" in _one("SC_ERROR_NOT_ALLOWED", "OpenSC").note
    assert "C_GenerateKeyPair" in _one("SC_ERROR_INVALID_PIN_LENGTH", "OpenSC").note
    assert "0.23" in _one("SC_ERROR_WRONG_PADDING", "OpenSC").note


def test_every_ckr_with_its_value_in_every_spelling():
    for name, hexval, dec, _since, _meaning in ckr_rows():
        value = int(hexval, 16)
        assert int(dec) == value
        for spelling in (name, name.lower(), hexval, hexval.lower(), f"0x{value:X}", dec):
            found = [m.code for m in lookup(spelling) if m.code.system == "CKR"]
            assert found and found[0].name == name and found[0].value == value, spelling


def test_ckr_texts_follow_the_projects_constant_table():
    family = FAMILIES["CKR"]
    assert set(CKR_TEXTS) == set(family.canonical.values())
    for value, name in family.canonical.items():
        code = explain_rv(value)
        assert code is not None and code.name == name and code.value == value
        assert code.meaning == CKR_TEXTS[name].meaning


def _sw_samples(cell: str) -> tuple[str | None, list[int]]:
    """A status word cell as (pattern name or None, status words to try)."""
    cell = cell.replace("\u2013", "-")
    if "-" in cell:
        lo, hi = (int(part.replace(" ", ""), 16) for part in cell.split("-"))
        return f"{lo:04X}-{hi:04X}", [lo, (lo + hi) // 2, hi]
    compact = cell.replace(" ", "")
    if "x" in compact:
        lo = int(compact.replace("x", "0"), 16)
        hi = int(compact.replace("x", "F"), 16)
        return compact, [lo, lo + 2, hi]
    return None, [int(compact, 16)]


def test_every_status_word_with_its_opensc_error():
    for cell, _meaning, _log, opensc in sw_rows():
        if cell == "other":
            continue
        pattern, samples = _sw_samples(cell)
        expected = opensc.split()[0]
        for sw in samples:
            code = explain_sw(sw)
            assert code is not None and code.value == sw, cell
            if pattern:
                assert code.pattern == pattern, (cell, code.pattern)
            else:
                assert code.name == f"{sw:04X}" and code.pattern is None, cell
                for spelling in (cell, cell.replace(" ", ""), f"0x{sw:04X}", f"sw:{sw:04x}"):
                    assert lookup(spelling)[0].code == code, spelling
            if expected in ("-", "\u2013"):
                assert code.maps_to is None, cell
            else:
                assert code.maps_to and _one(code.maps_to, "OpenSC").value == int(expected), cell


def test_status_words_no_table_names_fall_back_to_their_group():
    # "other" in the notes: OpenSC gives unknown status words its generic card error.
    for sw in (0x6A99, 0x6F12, 0x6912, 0x9F10):
        code = explain_sw(sw)
        assert code is not None and code.maps_to == "SC_ERROR_CARD_CMD_FAILED", hex(sw)
    assert explain_sw(0x1234) is None and explain_sw(0x10000) is None


def _pcsc_name(cell: str) -> str:
    return cell.split(" (")[0]


def test_every_pcsc_code_with_its_value_and_opensc_error():
    for cell, value, _label, _meaning, opensc in pcsc_rows():
        name, number = _pcsc_name(cell), int(value, 16)
        found = [c for c in by_name(name) if c.system == "PC/SC" and c.value == number]
        assert found, f"{name} = {value} missing"
        assert name in _names(lookup(value)), value
        assert name in _names(lookup(f"pcsc:{value}")), value
        if number:
            assert name in _names(lookup(str(number - (1 << 32)))), "as a signed LONG"
        target = opensc.split()[0]
        if target in ("-", "\u2013"):
            assert found[0].maps_to is None, name
        else:
            assert found[0].maps_to == target, f"{name} maps to {found[0].maps_to}"
    assert codes.pcsc_name(0x80100069) == "SCARD_W_REMOVED_CARD"


def test_every_pcsc_state_flag_by_name():
    for name, value in pcsc_flag_rows():
        assert _one(name, "PC/SC").value == value, name


def test_every_gskit_code_with_its_value():
    for dec, hexval, constant, _meaning, _msg in gskit_rows():
        if "\u2013" in dec:
            continue  # the ranges, below
        value = int(dec)
        assert int(hexval, 16) == value, constant
        for spelling in (f"gsk:{value}", f"gsk:{hexval}", f"GSK:{value}"):
            found = [m.code for m in lookup(spelling) if m.code.system == "GSKit"]
            assert found and found[0].value == value, spelling
        if constant.startswith("GSK_"):
            assert _one(constant, "GSKit").value == value, constant
            assert found[0].name == constant
        else:  # "(name unverified ...)": known by number, and says so
            assert "not confirmed" in found[0].note, value


def test_gskit_ranges_and_ibm_i_codes():
    rows = {row[0]: row for row in gskit_rows() if "\u2013" in row[0]}
    ibm_i = rows["6000\u20136016"][2]
    pairs = re.findall(r"([A-Z_]+) (\d{4})", ibm_i)
    assert len(pairs) == 16
    for suffix, value in pairs:
        name = f"GSK_AS400_ERROR_{suffix}"
        assert _one(name, "GSKit").value == int(value), name
        assert name in _names(lookup(f"gsk:{value}"))
    for value in (7000, 7500, 7999):
        found = [m.code for m in lookup(f"gsk:{value}")]
        assert found and found[0].system == "GSKit" and found[0].value == value
    assert lookup("gsk:6006") == []  # a hole in the IBM i block


def test_gskit_pkcs11_names_without_confirmed_numbers():
    prose = _section("### 5.2", "### 5.3")
    names = set(re.findall(r"`(GSK_ERROR_PKCS11_\w+|GSK_ERROR_INVALID_V2_HEADER)`", prose))
    assert len(names) == 5
    for name in names:
        code = _one(name, "GSKit")
        assert code.value is None and "not confirmed" in code.note


def test_every_ctgsk_and_amq_message():
    for row in ctgsk_rows():
        assert _one(row[0], "CTGSK").name == row[0]
        assert lookup(row[0].lower())[0].code.name == row[0]
    for row in amq_rows():
        assert _one(row[0], "AMQ").name == row[0]
        assert lookup(row[0])[0].code.system == "AMQ"
    assert lookup("AMQ9669")[0].code.name == "AMQ9669E"  # without the severity letter


def test_mq_reason_codes_of_both_notes():
    pairs = re.findall(r"`(\d{4})`\s+(MQRC_\w+)", _text(ERROR_CODES))
    pairs += [(v, n) for n, v in re.findall(r"`(MQRC_\w+)` \((\d{4})\)", _text(FIELD_NOTES))]
    assert len({n for _, n in pairs}) == 8
    for value, name in pairs:
        assert _one(name, "MQRC").value == int(value), name
        assert lookup(f"mqrc:{value}")[0].code.name == name
        assert name in _names(lookup(value))


def test_messages_of_the_field_notes():
    notes = _text(FIELD_NOTES)
    ids = set(re.findall(r"\b((?:CTGSK|AMQ)\d{4}[A-Z])\b", notes))
    assert {"CTGSK3026W", "CTGSK2137W", "CTGSK3034W", "AMQ9669E", "AMQ5530E"} <= ids
    for message in ids:
        assert lookup(message), message
    # What the field found behind the misleading runmqakm messages is in their advice.
    assert "tokenlabel" in " ".join(_one("CTGSK3026W", "CTGSK").causes)
    assert "pkcs11-tool --write-object" in " ".join(_one("CTGSK3034W", "CTGSK").checks)


def test_explanations_are_our_own_words():
    """No meaning repeats the reference's sentence (or holds it, or is held by it)."""
    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", s.lower()).strip()

    theirs: dict[str, str] = {}
    for name, _v, _label, meaning, _m in opensc_rows():
        theirs[name] = meaning
    for name, _h, _d, _s, meaning in ckr_rows():
        theirs[name] = meaning
    for cell, _v, _label, meaning, _m in pcsc_rows():
        theirs[_pcsc_name(cell)] = meaning
    for _d, _h, constant, meaning, _m in gskit_rows():
        theirs[constant] = meaning
    for row in sw_rows():
        theirs[row[0].replace(" ", "")] = row[1]
    for name, meaning in theirs.items():
        ref = norm(meaning)
        if len(ref.split()) < 3:
            continue
        for code in by_name(name) or ([explain_sw(int(name, 16))] if len(name) == 4 else []):
            if code is None:
                continue
            ours = norm(code.meaning)
            assert ours != ref, f"{name}: the reference's meaning, copied"
            if len(ref.split()) >= 4:
                assert ref not in ours and ours not in ref, f"{name}: the reference's words"


def test_every_code_is_complete_and_its_mapping_resolves():
    seen = set()
    layer_up = {"SW": "OpenSC", "PC/SC": "OpenSC", "OpenSC": "CKR"}
    for code in codes.all_codes():
        assert code.system in SYSTEMS
        assert code.meaning and "{" not in code.meaning and code.meaning[-1] == ".", code.name
        key = (code.system, code.name, code.value)
        assert key not in seen, key
        seen.add(key)
        if code.maps_to:
            assert _one(code.maps_to, layer_up[code.system]), code.name
    follow = [c.name for c in codes.follow(explain_sw(0x6983))]
    assert follow == ["SC_ERROR_AUTH_METHOD_BLOCKED", "CKR_PIN_LOCKED"]


# --- spellings -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, system, name", [
    ("CKR_PIN_INCORRECT", "CKR", "CKR_PIN_INCORRECT"),
    ("ckr_pin_incorrect", "CKR", "CKR_PIN_INCORRECT"),
    ("0xA0", "CKR", "CKR_PIN_INCORRECT"),
    ("0x000000A0", "CKR", "CKR_PIN_INCORRECT"),
    ("160", "CKR", "CKR_PIN_INCORRECT"),
    ("ckr:0xa0", "CKR", "CKR_PIN_INCORRECT"),
    ("63C2", "SW", "63C2"),
    ("63 C2", "SW", "63C2"),
    ("0x63C2", "SW", "63C2"),
    ("sw:63c2", "SW", "63C2"),
    ("6A82", "SW", "6A82"),
    ("-1214", "OpenSC", "SC_ERROR_PIN_CODE_INCORRECT"),
    ("SC_ERROR_PIN_CODE_INCORRECT", "OpenSC", "SC_ERROR_PIN_CODE_INCORRECT"),
    ("0x80100069", "PC/SC", "SCARD_W_REMOVED_CARD"),
    ("SCARD_W_REMOVED_CARD", "PC/SC", "SCARD_W_REMOVED_CARD"),
    ("-2146434967", "PC/SC", "SCARD_W_REMOVED_CARD"),
    ("GSK_ERROR_BAD_KEYFILE_PASSWORD", "GSKit", "GSK_ERROR_BAD_KEYFILE_PASSWORD"),
    ("gsk:408", "GSKit", "GSK_ERROR_BAD_KEYFILE_PASSWORD"),
    ("gsk:0x198", "GSKit", "GSK_ERROR_BAD_KEYFILE_PASSWORD"),
    ("rc=408", "GSKit", "GSK_ERROR_BAD_KEYFILE_PASSWORD"),
    ("rrcE_SSL_BAD_KEYFILE_LABEL", "GSKit", "GSK_ERROR_BAD_KEYFILE_LABEL"),
    ("CTGSK3026W", "CTGSK", "CTGSK3026W"),
    ("AMQ9669E", "AMQ", "AMQ9669E"),
    ("amq9669e", "AMQ", "AMQ9669E"),
    ("mqrc:2393", "MQRC", "MQRC_SSL_INITIALIZATION_ERROR"),
    ("MQRC_KEY_REPOSITORY_ERROR", "MQRC", "MQRC_KEY_REPOSITORY_ERROR"),
    ("  2381 ", "MQRC", "MQRC_KEY_REPOSITORY_ERROR"),
])
def test_spelling(text: str, system: str, name: str):
    first = lookup(text)[0].code
    assert (first.system, first.name) == (system, name)


@pytest.mark.parametrize("sw, words", [
    (0x63C2, ("2 tries",)), (0x63C0, ("blocked",)), (0x6110, ("16", "00 C0 00 00 10")),
    (0x6100, ("256",)), (0x6C20, ("32", "Le = 20")),
])
def test_status_word_patterns_explain_their_variable_part(sw: int, words: tuple[str, ...]):
    code = explain_sw(sw)
    assert code is not None and code.name == f"{sw:04X}"
    for w in words:
        assert w in code.meaning, (hex(sw), code.meaning)
    assert "x tries left" in lookup("63Cx")[0].code.meaning


# --- ambiguous numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("6", [("CKR", "CKR_FUNCTION_FAILED"), ("GSKit", "GSK_KEY_LABEL_NOT_FOUND")]),
    ("401", [("CKR", "CKR_CRYPTOKI_ALREADY_INITIALIZED"), ("GSKit", "GSK_ERROR_BAD_DATE")]),
    ("416", [("CKR", "CKR_MUTEX_BAD"), ("GSKit", "GSK_ERROR_PERMISSION_DENIED")]),
    ("6000", [("GSKit", "GSK_AS400_ERROR_NOT_TRUSTED_ROOT"), ("SW", "6000")]),
    ("0x8010001F", [("PC/SC", "SCARD_E_UNSUPPORTED_FEATURE"), ("PC/SC", "SCARD_E_UNEXPECTED")]),
    ("0", [("CKR", "CKR_OK"), ("GSKit", "GSK_OK"), ("PC/SC", "SCARD_S_SUCCESS"),
           ("OpenSC", "SC_SUCCESS")]),
])
def test_ambiguous_numbers_list_every_reading_likeliest_first(text, expected):
    assert [(m.code.system, m.code.name) for m in lookup(text)] == expected


def test_every_number_shared_by_ckr_and_gskit_gives_both_ckr_first():
    shared = [c.value for c in codes.all_codes("GSKit")
              if c.value is not None and explain_rv(c.value) is not None]
    assert len(shared) > 10
    for value in shared:
        systems = [m.code.system for m in lookup(str(value))]
        assert systems[:2] == ["CKR", "GSKit"], value


def test_four_hex_digits_that_are_not_decimal_read_as_status_word_first():
    for text in ("6A82", "63C2", "6D00", "9F10"):
        assert lookup(text)[0].code.system == "SW", text
    assert [m.code.system for m in lookup("9000")] == ["SW"]


def test_renderer_helpers():
    assert explain_rv(0xA0).name == "CKR_PIN_INCORRECT"
    assert explain_rv(0x80000001).name.startswith("CKR_VENDOR_DEFINED")
    assert explain_rv(0x4) is None
    assert explain_sw(0x9000).maps_to == "SC_SUCCESS"
    assert codes.explain_opensc(1214).name == "SC_ERROR_PIN_CODE_INCORRECT"


@pytest.mark.parametrize("text", ["", "XYZ", "0x", "gsk:", "sw:zz", "-", "C2", "2059",
                                  "99999999999999999999999", "gsk:6006", "-1102"])
def test_what_is_no_code_gives_no_reading(text: str):
    assert lookup(text) == []


# --- the command --------------------------------------------------------------------------------

def test_explain_prints_everything_an_administrator_needs():
    res = cli("explain", "160")
    assert res.returncode == 0 and res.stderr == ""
    out = res.stdout
    for part in ("CKR_PIN_INCORRECT", "PKCS#11 return value", "0x000000A0", "160",
                 "meaning:", "typical causes:", "what to check:", "SC_ERROR_PIN_CODE_INCORRECT"):
        assert part in out, part


def test_explain_ambiguous_number_prints_each_reading_labelled():
    res = cli("explain", "6")
    assert res.returncode == 0
    assert "2 readings" in res.stdout
    assert "[1/2] read as decimal: CKR_FUNCTION_FAILED" in res.stdout
    assert "[2/2] read as decimal: GSK_KEY_LABEL_NOT_FOUND" in res.stdout
    assert res.stdout.index("CKR_FUNCTION_FAILED") < res.stdout.index("GSK_KEY_LABEL_NOT_FOUND")


def test_explain_several_codes_and_the_chain_of_a_status_word():
    res = cli("explain", "6983", "SCARD_W_REMOVED_CARD", "AMQ9669E")
    assert res.returncode == 0
    assert "SC_ERROR_AUTH_METHOD_BLOCKED (-1212)" in res.stdout
    assert "CKR_PIN_LOCKED" in res.stdout and "CKR_DEVICE_REMOVED" in res.stdout
    assert "AMQ9669E" in res.stdout and "IBM MQ message" in res.stdout


def test_unknown_code_is_one_line_and_status_1():
    res = cli("explain", "XYZ")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr == f"p11spy explain: unknown code 'XYZ': {UNKNOWN_TAIL}\n"


def test_some_unknown_codes_print_the_known_ones_and_fail():
    res = cli("explain", "160", "XYZ", "0xA0", "nope")
    assert res.returncode == 1
    assert res.stdout.count("CKR_PIN_INCORRECT  (PKCS#11 return value)") == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and "'XYZ'" in lines[0] and "'nope'" in lines[1]
    assert "Traceback" not in res.stderr


def test_json_is_one_object_per_code_with_its_readings():
    res = cli("explain", "--json", "160", "6", "63 C2", "XYZ")
    assert res.returncode == 1
    objs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [o["input"] for o in objs] == ["160", "6", "63 C2"]
    first = objs[0]["readings"][0]
    assert first["system"] == "CKR" and first["name"] == "CKR_PIN_INCORRECT"
    assert first["value"] == 160 and first["hex"] == "0x000000A0"
    assert first["causes"] and first["checks"] and first["meaning"]
    assert [r["name"] for r in objs[1]["readings"]] == ["CKR_FUNCTION_FAILED",
                                                        "GSK_KEY_LABEL_NOT_FOUND"]
    sw = objs[2]["readings"][0]
    assert sw["pattern"] == "63Cx" and sw["chain"] == ["SC_ERROR_PIN_CODE_INCORRECT",
                                                       "CKR_PIN_INCORRECT"]
    assert res.stderr.count("\n") == 1


def test_explain_needs_a_code():
    res = cli("explain")
    assert res.returncode == 2 and "usage" in res.stderr


def test_decoder_does_not_import_textual():
    code = ("import sys, p11spy.decoder.explain, p11spy.decoder.codes; "
            "sys.exit('textual' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
