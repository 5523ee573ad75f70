"""``accesspoint pmode validate|show|import``: exit codes and the JSON document (the first test through the console
script's process, the rest through the CLI's ``main`` in this process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pmode.document import dump_yaml
from tests.cli import in_process
from tests.conftest import interop_path

EXAMPLES = Path(__file__).resolve().parent.parent / "pmode" / "examples"
ACCESSPOINT = Path(sys.executable).parent / "accesspoint"
BLUE = "domibus/harmony/pmodes/domibus-gw-sample-pmode-blue.xml"


def run(*args: str | Path, process: bool = False) -> tuple[int, dict[str, Any]]:
    """Run ``accesspoint pmode ARGS`` (as the installed console script's process, or through ``main`` here); its exit
    code and the one JSON document it printed."""
    if not process:
        done = in_process("pmode", *args)
        return done.code, done.document
    ran = subprocess.run([str(ACCESSPOINT), "pmode", *map(str, args)], capture_output=True, text=True, timeout=60)
    return ran.returncode, json.loads(ran.stdout)


def test_validate_example_exits_0_listing_pmodes() -> None:
    """A valid file exits 0 with its P-Mode ids and parties."""
    code, document = run("validate", EXAMPLES / "pmodes.yaml", process=True)
    assert code == 0 and document["ok"] is True
    assert document["pmodes"] == ["se-to-be", "be-to-se", "se-no-request-reply", "no-to-se"]
    assert document["self"] == ["ap-sweden"]


def test_validate_invalid_file_exits_2_listing_every_problem(tmp_path: Path) -> None:
    """An invalid file exits 2; the error lists every problem with its file, P-Mode and field."""
    shutil.copytree(EXAMPLES / "certs", tmp_path / "certs")
    document = yaml.safe_load((EXAMPLES / "pmodes.yaml").read_text())
    document["pmodes"][0]["legs"][0]["security"]["signature_algorithm"] = "rsa-sha1"
    document["pmodes"][1]["legs"][0]["action"] = ""
    path = tmp_path / "pmodes.yaml"
    path.write_text(dump_yaml(document))
    code, out = run("validate", path)
    assert code == 2 and out["ok"] is False
    assert out["error"]["code"] == "PMODE_INVALID"
    problems = out["error"]["problems"]
    assert {(p["file"], p["pmode"], p["field"]) for p in problems} == {
        (str(path), "se-to-be", "legs[0].security.signature_algorithm"),
        (str(path), "be-to-se", "legs[0].action"),
    }


def test_validate_unreadable_or_misnamed_file_is_a_usage_error(tmp_path: Path) -> None:
    """A missing file or one that is neither YAML nor TOML by name exits 64."""
    code, out = run("validate", tmp_path / "absent.yaml")
    assert code == 64 and out["error"]["code"] == "usage"
    (tmp_path / "pmodes.json").write_text("{}")
    assert run("validate", tmp_path / "pmodes.json")[0] == 64


def test_validate_toml_example() -> None:
    """The TOML example validates like the YAML one."""
    code, out = run("validate", EXAMPLES / "pmodes.toml")
    assert code == 0 and len(out["pmodes"]) == 4


def test_show_one_pmode_with_defaults_filled_in() -> None:
    """show --id prints that P-Mode with every default, its parties and certificate fingerprints."""
    code, out = run("show", EXAMPLES / "sdk.yaml", "--id", "sdk-push")
    assert code == 0
    (pmode,) = out["pmodes"]
    assert pmode["id"] == "sdk-push" and pmode["transport_profile"] == "digg-transport-as4-v1_0"
    assert pmode["binding_uri"] == "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/push"
    leg = pmode["legs"][0]
    assert leg["security"]["signature_algorithm"] == "rsa-sha256"
    assert leg["security"]["trust"]["bind_cn_to_party_id"] is True
    assert leg["payload"]["format"] == "xhe" and leg["direction"] == "outgoing"
    assert leg["security"]["trust"]["anchors"][0]["common_name"] == "Example Development CA"
    assert {p["name"] for p in out["parties"]} == {"our-ap", "sdk-federation"}


def test_show_unknown_id_is_a_usage_error() -> None:
    """show --id of a P-Mode the file does not have exits 64 naming the ones it has."""
    code, out = run("show", EXAMPLES / "pmodes.yaml", "--id", "nope")
    assert code == 64 and "se-to-be" in out["error"]["reason"]


def test_import_prints_document_and_exits_3_with_unmapped_items() -> None:
    """import without --out prints the converted document and what could not be mapped (exit 3: incomplete)."""
    code, out = run("import", interop_path(BLUE))
    assert code == 3 and out["ok"] is True
    assert len(out["pmodes"]) == 4 and out["document"]["self"] == "blue_gw"
    assert any(note["item"] == "errorHandling[@name='demoErrorHandling']" for note in out["unmapped"])


def test_import_out_file_then_validate_names_missing_certificates(tmp_path: Path) -> None:
    """import --out writes YAML (the report as comments); validating it then asks for the partner certificate."""
    out_file = tmp_path / "blue.yaml"
    code, out = run("import", interop_path(BLUE), "--out", out_file)
    assert code == 3 and out["out"] == str(out_file) and "document" not in out
    text = out_file.read_text()
    assert text.startswith("# Imported from the Domibus P-Mode")
    assert "# - splitting[@name='default']" in text
    code, checked = run("validate", out_file)
    assert code == 2
    assert {p["field"] for p in checked["error"]["problems"]} == {
        "legs[0].security.trust.pin_partner",
        "legs[0].security.encrypt",
    }
    toml_file = tmp_path / "blue.toml"
    assert run("import", interop_path(BLUE), "--out", toml_file)[0] == 3
    assert run("validate", toml_file)[0] == 2


def test_import_of_invalid_xml_exits_2(tmp_path: Path) -> None:
    """A file that is not a Domibus P-Mode exits 2 with the problem naming it."""
    bad = tmp_path / "bad.xml"
    bad.write_text("<notdomibus/>")
    code, out = run("import", bad)
    assert code == 2 and out["error"]["problems"][0]["file"] == str(bad)
    assert run("import", tmp_path / "absent.xml")[0] == 64
