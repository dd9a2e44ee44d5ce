"""Thin layer over ``huggingface_hub`` for benchmark datasets: list a repo, download one file, map errors.

``huggingface_hub`` is imported inside the functions so that ``stc`` commands that never touch the hub
start fast. Every hub failure is re-raised as :class:`HubError`, whose message says what failed and what
to do, and never contains the token. Works with huggingface_hub 0.3x (``requests``) and 1.x/2.x (``httpx``).
"""

from __future__ import annotations

import http.client
import os
from contextlib import contextmanager
from pathlib import Path

_LOGIN_HINT = (
    "pass --token, set HF_TOKEN or run `hf auth login` (older huggingface_hub: `huggingface-cli login`)"
)


class HubError(RuntimeError):
    """A hub request failed; the message is one sentence saying what failed and what to do."""


class RepoNotFoundError(HubError):
    """No such dataset repo on the hub (or a private one): a moved dataset may answer to its old name."""


def endpoint_url(endpoint: str | None) -> str:
    """The hub the requests go to: ``endpoint``, else the default (or ``$HF_ENDPOINT`` at import time)."""
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def gated_message(repo_id: str, endpoint: str | None, why: str = "") -> str:
    """What to do about gated dataset ``repo_id`` (``why``: what the hub refused, after a refusal)."""
    page = f"{endpoint_url(endpoint)}/datasets/{repo_id}"
    return f"Dataset {repo_id} is gated{why}: accept its terms at {page} while logged in, then {_LOGIN_HINT}."


def not_found_message(repo_ids: list[str], endpoint: str | None) -> str:
    """What to do when the hub knows none of ``repo_ids`` (a dataset's name, then its old names)."""
    return (
        f"No dataset repo {' or '.join(repo_ids)} on {endpoint_url(endpoint)}, or it is private: check the "
        f"name, or {_LOGIN_HINT} with an account that can read it."
    )


def resolve_token(token: str | None) -> str | None:
    """The token to use: ``--token``, else ``$HF_TOKEN``, else the hub's stored login, else ``None``."""
    from huggingface_hub import get_token

    for candidate in (token, os.environ.get("HF_TOKEN"), get_token()):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def list_files(
    repo_id: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None
) -> tuple[str, dict[str, int]]:
    """Resolve ``revision`` (default: the main branch) of dataset ``repo_id`` and list its files.

    Returns ``(commit_sha, {path: size in bytes})`` with the 40-hex commit sha and every file of the repo,
    nested paths included. ``endpoint=None`` means the default hub (or ``$HF_ENDPOINT`` at import time).
    """
    from huggingface_hub import HfApi

    with _hub_errors(repo_id, None, revision, token, endpoint):
        api = HfApi(endpoint=endpoint, token=token)
        info = api.dataset_info(repo_id, revision=revision, files_metadata=True)
        sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    return str(info.sha), sizes


def download_file(
    repo_id: str,
    path: str,
    dest_dir: Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download ``path`` of dataset ``repo_id`` to ``dest_dir / path`` and return that local path.

    A file already there and unchanged on the hub is not fetched again (one HEAD request). Partial data is
    kept as ``dest_dir/.cache/huggingface/download/<path>.incomplete``, so the target path only ever holds a
    complete file and running the same call again resumes.
    """
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id, path, revision, token, endpoint):
        local = hf_hub_download(
            repo_id,
            path,
            repo_type="dataset",
            revision=revision,
            local_dir=dest_dir,
            token=token,
            endpoint=endpoint,
        )
    return Path(local)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types of a failed connection or a broken transfer, for whichever HTTP stack is installed."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, http.client.HTTPException]
    for module in ("httpx2", "httpx", "requests"):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        errors.append(mod.RequestException if module == "requests" else mod.TransportError)
    return tuple(errors)


@contextmanager
def _hub_errors(
    repo_id: str, path: str | None, revision: str | None, token: str | None, endpoint: str | None
):
    """Re-raise hub and network failures inside the block as :class:`HubError` with an actionable message."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = endpoint_url(endpoint)
    rev = revision or "main"
    what = f"{path!r} from dataset {repo_id}" if path else f"the file list of dataset {repo_id}"
    try:
        yield
    except GatedRepoError as exc:  # 401 without a token, 403 with one that has not accepted the terms
        given = "the token given does not grant access" if token else "no token was given"
        raise HubError(gated_message(repo_id, endpoint, f" and {given}")) from exc
    except RepositoryNotFoundError as exc:
        raise RepoNotFoundError(not_found_message([repo_id], endpoint)) from exc
    except RevisionNotFoundError as exc:
        msg = f"Dataset {repo_id} has no revision {rev!r}: check the branch, tag or commit sha."
        raise HubError(msg) from exc
    except LocalEntryNotFoundError as exc:  # hf_hub_download: the HEAD request could not reach the hub
        raise HubError(_network_message(what, where, exc.__cause__ or exc, token)) from exc
    except EntryNotFoundError as exc:
        msg = f"File {path!r} is not in dataset {repo_id} at revision {rev!r}: check the path and revision."
        raise HubError(msg) from exc
    except HfHubHTTPError as exc:  # before the network errors: it subclasses requests' error on 0.3x
        status = getattr(exc.response, "status_code", "an error")
        msg = f"{where} answered {status} while fetching {what}; run the same command again later."
        raise HubError(msg) from exc
    except _network_errors() as exc:
        raise HubError(_network_message(what, where, exc, token)) from exc


def _network_message(what: str, where: str, exc: BaseException, token: str | None) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if token:
        reason = reason.replace(token, "***")
    return (
        f"Could not fetch {what}: {where} could not be reached or the transfer broke off ({reason}); "
        "check the connection and run the same command again to resume."
    )


MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]  # weights, configs, tokenizer


# ``--model-path demo``: the small model trained on the demo's kind of clips, shipped in the package
DEMO_MODEL = Path(__file__).resolve().parent.parent / "data" / "demo_model"


def checkpoint_folder(source: str, revision: str | None = None) -> Path:
    """``--model-path``: ``demo`` (the packaged demo model), a local checkpoint folder as it is, else a hub
    model id fetched to the hub cache."""
    if source == "demo":
        return DEMO_MODEL
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise ValueError(f"--model-path {source}: no such folder")
    return download_model(source, revision)


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """The checkpoint files of hub model ``repo_id``, in the hub cache (fetched once, then reused).

    Raises ValueError saying what ``--model-path`` accepts when it is neither a folder nor reachable.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"--model-path {repo_id!r} is neither a folder nor a reachable hub model ({reason}); "
            "pass a checkpoint folder, a hub id, or random:tiny / random:full"
        ) from None
