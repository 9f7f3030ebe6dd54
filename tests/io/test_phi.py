"""De-identification: patient keys and no PHI in meta, repr or logs."""

from __future__ import annotations

import logging
import shutil
import stat
from pathlib import Path

import pytest
from io_builders import write_ct_series

from lungcancer.io import patient_key, read_image
from lungcancer.io.phi import phi_salt

PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN-4711-XYZ",
    "PatientBirthDate": "1951-03-17 SECRET",
    "StudyDate": "20240229",
    "StudyTime": "134501",
    "AcquisitionDateTime": "20240229134502",
    "InstitutionName": "Saint Example Hospital",
    "InstitutionAddress": "1 Example Road, Exampleton",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "TECH^TERRY",
    "AccessionNumber": "ACC99887766",
    "SeriesDescription": "Jane Doe chest follow-up",
    "StudyDescription": "Doe private study",
    "StudyID": "STUDY-5150",
}


def test_patient_key_is_stable_salted_and_short(monkeypatch: pytest.MonkeyPatch) -> None:
    first = patient_key("MRN-1")
    assert first == patient_key(" MRN-1 ") and len(first) == 16
    assert first != patient_key("MRN-2")
    monkeypatch.setenv("LUNGCANCER_PHI_SALT", "another-site")
    assert patient_key("MRN-1") != first


def test_salt_file_is_created_once_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LUNGCANCER_PHI_SALT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    salt = phi_salt()
    salt_file = tmp_path / "lungcancer" / "phi_salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert phi_salt() == salt and len(salt) >= 32
    assert patient_key("MRN-1") == patient_key("MRN-1")


# pydicom warns while the test itself writes the invalid values; the reader must not.
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_planted_phi_reaches_neither_meta_nor_repr_nor_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pydicom

    folder = tmp_path / "s"
    # Letters are invalid in a UID: pydicom would log the value verbatim if it converted it.
    truth = write_ct_series(folder, n_slices=3, series_uid="1.2.840.99.SECRETUID")
    other = write_ct_series(folder, n_slices=2, prefix="other", seed=5)
    study_uid = ""
    for path in truth.paths + other.paths:
        ds = pydicom.dcmread(path)
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.ContrastBolusAgent = "Omnipaque given by Dr Jane Doe"
        study_uid = str(ds.StudyInstanceUID)
        ds.save_as(path)
    # A broken file and a second series make the reader log warnings and its choice.
    shutil.copy(truth.paths[0], folder / "broken.dcm")
    (folder / "broken.dcm").write_bytes((folder / "broken.dcm").read_bytes()[:900])
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        scan = read_image(folder)
    assert "skipped_files" in scan.meta and "series_choice" in scan.meta
    exposed = "\n".join([repr(scan.meta), str(scan), repr(scan), caplog.text])
    for value in [*PHI.values(), "DOE", "Omnipaque", truth.series_uid, study_uid]:
        assert value not in exposed, f"{value!r} leaked"
    for path in truth.paths:
        sop_uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert sop_uid not in exposed
    assert scan.meta["patient_key"] == patient_key(PHI["PatientID"])
    assert scan.meta["contrast"] is True
    assert scan.meta["manufacturer"] == "ACME" and scan.meta["kvp"] == 120.0
