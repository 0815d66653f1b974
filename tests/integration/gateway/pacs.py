"""Debian's Orthanc (with its DICOMweb plugin) as a hospital PACS: started by a test on loopback
ports with a generated configuration, stopped and started again to play a PACS that is down."""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_ports, skip_or_fail_in_ci

AE_TITLE = "HOSPITALPACS"


class Orthanc:
    """One Orthanc on free loopback ports; ``start``/``stop`` may be called again (same storage)."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("Orthanc")
        plugins = glob.glob("/usr/share/orthanc/plugins*/libOrthancDicomWeb.so")
        if binary is None or not plugins:
            skip_or_fail_in_ci(
                "Orthanc with its DICOMweb plugin not installed (make tools: scripts/get-dicom-tools.sh)"
            )
        self.binary, self.work = binary, work
        self.http_port, self.dicom_port = free_ports(2)
        work.mkdir(parents=True, exist_ok=True)
        self.config = work / "orthanc.json"
        self.config.write_text(
            json.dumps(
                {
                    "Name": "sightline-test-pacs",
                    "StorageDirectory": str(work / "storage"),
                    "IndexDirectory": str(work / "index"),
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "DicomAet": AE_TITLE,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomAlwaysAllowStore": True,
                    "DicomCheckCalledAet": True,
                    "Plugins": [plugins[0]],
                    "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def stow_url(self) -> str:
        return f"{self.url}/dicom-web/studies"

    def start(self, timeout_s: float = 30) -> None:
        log = (self.work / "orthanc.log").open("ab")
        self.process = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "Orthanc did not start: " + (self.work / "orthanc.log").read_text()[-2000:]
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def qido(self, path: str, **params: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/dicom-web/{path}", params=params, timeout=10)
        assert r.status_code in (200, 204), r.text
        return list(r.json()) if r.status_code == 200 and r.content else []


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute (PersonName and others as DICOM JSON has them)."""
    return (item.get(tag, {}).get("Value") or [None])[0]
