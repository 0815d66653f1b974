"""The S3 object-storage path (minio client) against moto's S3 server over real HTTP."""

from __future__ import annotations

import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from sightline_common.errors import NotFound
from sightline_common.storage import S3Store, store_from_settings

pytestmark = pytest.mark.integration


def test_s3_store_put_get_list_delete_presign(s3_endpoint: str) -> None:
    store = store_from_settings(
        local_dir=None,
        s3_endpoint=s3_endpoint,
        s3_access_key="test",
        s3_secret_key="test",
        s3_bucket="sightline-test",
        s3_secure=False,
    )
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    assert store.ready()
    store.put("studies/a/instances/0.dcm", b"DICM-bytes", "application/dicom")
    store.put("studies/a/explain/overlay.png", b"png", "image/png")
    assert store.get("studies/a/instances/0.dcm") == b"DICM-bytes"
    assert [k for k, _ in store.list("studies/a/")] == [
        "studies/a/explain/overlay.png",
        "studies/a/instances/0.dcm",
    ]
    url = store.presigned_get("studies/a/explain/overlay.png", timedelta(minutes=5))
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"png"
    store.delete("studies/a/instances/0.dcm")
    assert not store.exists("studies/a/instances/0.dcm")
    with pytest.raises(NotFound):
        store.get("studies/a/instances/0.dcm")


def test_gateway_on_s3_presigns_explanation_links_and_retention_empties_the_prefix(
    s3_endpoint: str, tmp_path: Path
) -> None:
    from tests.unit.gateway.gateway_fixtures import FakeExplain, harness, token

    store = S3Store(s3_endpoint, "test", "test", "sightline-gw", secure=False)
    store.ensure_bucket()
    with harness(tmp_path) as h:
        # Swap the running pipeline onto S3 (the app builds it from settings in production).
        gw = h.client.app.state.gateway
        gw.store = gw.pipeline.store = store
        gw.pipeline.explain = FakeExplain(store)
        r = h.submit(mode="sync")
        assert r.status_code == 200, r.text
        link = r.json()["explanation"]["links"]["overlay_png"]
        assert "X-Amz-Signature" in link
        with urllib.request.urlopen(link, timeout=5) as response:
            assert response.read()[:4] == b"\x89PNG"
        study_id = r.json()["study_id"]
        assert h.client.get(f"/v1/studies/{study_id}/result.dcm", headers=token()).status_code == 200

        async def purge() -> int:
            return await gw.pipeline.purge_expired(timedelta(seconds=0))

        assert h.client.portal.call(purge) == 1  # type: ignore[union-attr]
        assert store.list(f"studies/{study_id}/") == []
