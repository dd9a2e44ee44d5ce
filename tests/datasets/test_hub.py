"""stc_cli.datasets.hub against a loopback fake hub, driven by the real huggingface_hub client over HTTP."""

from __future__ import annotations

import socket
import time

import pytest

from stc_cli.datasets.hub import HubError, RepoNotFoundError, download_file, list_files, resolve_token
from tests.fakehub import FakeHub

REPO = "stc-test/bench"
GATED = "stc-test/gated"
ZIP = "Real-Time Visual Understanding_1-50.zip"
FILES = {
    "Real_Time_Visual_Understanding.csv": b"id,question\n1,what?\n",
    ZIP: bytes(range(256)) * 3,
    "videos/part 1/clip.mp4": b"\x00\x01fake-mp4" * 10,
}


@pytest.fixture
def hub(fake_hub):
    fake_hub.add_repo(REPO, FILES)
    fake_hub.add_repo(GATED, {"data.json": b'{"ok": true}'}, gated=True)
    return fake_hub


@pytest.fixture
def no_backoff(monkeypatch):
    """Skip the client's retry pauses (1 s per broken transfer; 1+2+4+8+8 s for an unreachable HEAD)."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_list_files_returns_sha_and_sizes(hub):
    sha, sizes = list_files(REPO, endpoint=hub.url)
    assert sha == hub.shas[REPO] and len(sha) == 40
    assert sizes == {path: len(data) for path, data in FILES.items()}
    assert list_files(REPO, revision=sha, endpoint=hub.url) == (sha, sizes)


@pytest.mark.parametrize("path", list(FILES))
def test_download_file_writes_exact_bytes(hub, tmp_path, path):
    local = download_file(REPO, path, tmp_path / "raw", endpoint=hub.url)
    assert local == tmp_path / "raw" / path
    assert local.read_bytes() == FILES[path]


def test_second_download_does_no_get_until_the_file_is_deleted(hub, tmp_path):
    dest = tmp_path / "raw"
    download_file(REPO, ZIP, dest, endpoint=hub.url)
    download_file(REPO, ZIP, dest, endpoint=hub.url)
    assert hub.gets[ZIP] == 1
    (dest / ZIP).unlink()
    assert download_file(REPO, ZIP, dest, endpoint=hub.url).read_bytes() == FILES[ZIP]
    assert hub.gets[ZIP] == 2


def test_gated_repo_without_token_says_how_to_pass_one(hub, tmp_path):
    with pytest.raises(HubError, match="gated") as err:
        download_file(GATED, "data.json", tmp_path, endpoint=hub.url)
    message = str(err.value)
    assert "--token" in message and "HF_TOKEN" in message and "hf auth login" in message
    assert "no token was given" in message
    with pytest.raises(HubError, match="gated"):
        list_files(GATED, endpoint=hub.url)
    assert not (tmp_path / "data.json").exists()


def test_gated_files_of_a_listed_repo_are_refused_401_or_403_in_one_line(hub, tmp_path):
    # The real hub lists a gated dataset to anyone and refuses its files: 401 without a token, 403 with
    # an account that has not accepted the terms. Both are GatedRepoError, both get the same advice.
    hub.add_repo("stc-test/terms", {"data.json": b"{}"}, gated="files")
    assert list_files("stc-test/terms", endpoint=hub.url)[1] == {"data.json": 2}
    for token, why in ((None, "no token was given"), ("hf_not_accepted", "the token given does not grant")):
        with pytest.raises(HubError) as err:
            download_file("stc-test/terms", "data.json", tmp_path, token=token, endpoint=hub.url)
        message = str(err.value)
        assert message.startswith(f"Dataset stc-test/terms is gated and {why}")
        assert f"accept its terms at {hub.url}/datasets/stc-test/terms" in message and "HF_TOKEN" in message
        assert "\n" not in message and "hf_not_accepted" not in message
    assert not (tmp_path / "data.json").exists()


def test_gated_repo_with_the_right_token_works(hub, tmp_path):
    sha, sizes = list_files(GATED, token=hub.token, endpoint=hub.url)
    assert sha == hub.shas[GATED] and sizes == {"data.json": 12}
    local = download_file(GATED, "data.json", tmp_path, token=hub.token, endpoint=hub.url)
    assert local.read_bytes() == b'{"ok": true}'


def test_gated_repo_with_a_wrong_token_never_shows_it(hub, tmp_path):
    wrong = "hf_wrong_SECRET_987654321"
    for call in (
        lambda: list_files(GATED, token=wrong, endpoint=hub.url),
        lambda: download_file(GATED, "data.json", tmp_path, token=wrong, endpoint=hub.url),
    ):
        with pytest.raises(HubError, match="token given does not grant access") as err:
            call()
        assert wrong not in str(err.value) and hub.token not in str(err.value)


def test_missing_repo(hub, tmp_path):
    # Its own type: a dataset that moved is then tried under its old name.
    with pytest.raises(RepoNotFoundError, match="No dataset repo stc-test/nope .*or it is private"):
        list_files("stc-test/nope", endpoint=hub.url)
    with pytest.raises(RepoNotFoundError, match="No dataset repo stc-test/nope"):
        download_file("stc-test/nope", "a.csv", tmp_path, endpoint=hub.url)
    assert not (tmp_path / "a.csv").exists()


def test_missing_file_and_missing_revision(hub, tmp_path):
    with pytest.raises(HubError, match="'nope.zip' is not in dataset stc-test/bench at revision 'main'"):
        download_file(REPO, "nope.zip", tmp_path, endpoint=hub.url)
    assert not (tmp_path / "nope.zip").exists()
    with pytest.raises(HubError, match="no revision 'v9'"):
        list_files(REPO, revision="v9", endpoint=hub.url)
    with pytest.raises(HubError, match="no revision 'v9'"):
        download_file(REPO, ZIP, tmp_path, revision="v9", endpoint=hub.url)


def test_refused_connection(tmp_path, no_backoff):
    url = _closed_port_url()
    secret = "hf_refused_SECRET_111"
    with pytest.raises(HubError, match="could not be reached or the transfer broke off") as err:
        download_file(REPO, ZIP, tmp_path, token=secret, endpoint=url)
    assert url in str(err.value) and "again to resume" in str(err.value) and secret not in str(err.value)
    assert not (tmp_path / ZIP).exists()
    with pytest.raises(HubError, match="could not be reached"):
        list_files(REPO, token=secret, endpoint=url)


def test_one_dropped_connection_is_resumed_by_the_client(hub, tmp_path, no_backoff):
    hub.fail_next(ZIP)
    assert download_file(REPO, ZIP, tmp_path, endpoint=hub.url).read_bytes() == FILES[ZIP]
    assert hub.gets[ZIP] == 2  # the broken GET, then the client's own retry


def test_dropped_connections_give_a_resume_hint(hub, tmp_path, no_backoff):
    hub.fail_next(ZIP, times=100)
    with pytest.raises(HubError, match="transfer broke off .*run the same command again to resume"):
        download_file(REPO, ZIP, tmp_path, token=hub.token, endpoint=hub.url)
    assert not (tmp_path / ZIP).exists()
    assert hub.gets[ZIP] >= 2
    hub.fail_next(ZIP, times=0)  # the network is back: the same call now completes
    assert download_file(REPO, ZIP, tmp_path, endpoint=hub.url).read_bytes() == FILES[ZIP]


def test_resolve_token_order(monkeypatch, tmp_path):
    from huggingface_hub import constants

    assert resolve_token(None) is None
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    (tmp_path / "token").write_text("hf_stored\n")
    assert resolve_token(None) == "hf_stored"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert resolve_token(None) == "hf_env"
    assert resolve_token("hf_flag") == "hf_flag"
    monkeypatch.setenv("HF_TOKEN", "")
    assert resolve_token("") == "hf_stored"


def test_fake_hub_serves_ranges_and_context_manager():
    import urllib.request

    with FakeHub() as hub:
        hub.add_repo("a/b", {"x y.bin": b"0123456789"})
        req = urllib.request.Request(
            f"{hub.url}/datasets/a/b/resolve/main/x%20y.bin", headers={"Range": "bytes=4-"}
        )
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == b"456789"
            assert resp.headers["Content-Range"] == "bytes 4-9/10"
            assert resp.headers["X-Repo-Commit"] == hub.shas["a/b"]
