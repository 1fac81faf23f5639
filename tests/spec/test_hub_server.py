"""The loopback hub (tests/hub_server.py) answers as huggingface_hub 2.4 expects: files, ranges and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_server import HubServer, Repo


def test_files_ranges_and_errors(hub_server: HubServer, tmp_path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RevisionNotFoundError

    hub_server.repos["org/tiny"] = Repo(files={"config.json": b"{}", "blob.bin": bytes(range(256)) * 4})
    hub_server.repos["org/gated"] = Repo(files={"config.json": b"{}"}, gated=True)
    path = hf_hub_download("org/tiny", "config.json", endpoint=hub_server.url)
    assert Path(path).read_bytes() == b"{}"
    assert hub_server.repos["org/tiny"].commit in path  # cached under snapshots/<X-Repo-Commit>/
    import httpx2

    got = httpx2.get(f"{hub_server.url}/org/tiny/resolve/main/blob.bin", headers={"Range": "bytes=2-5"})
    assert got.status_code == 206 and got.content == bytes([2, 3, 4, 5])
    assert hub_server.log[-1].body_bytes == 4
    with pytest.raises(GatedRepoError):
        hf_hub_download("org/gated", "config.json", endpoint=hub_server.url)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/tiny", "config.json", revision="v9", endpoint=hub_server.url)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/tiny", "nope.json", endpoint=hub_server.url)
