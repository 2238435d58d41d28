"""Downloading a benchmark into the layout the readers expect (tools/download_data.py is the command).

The archive DATA/NAME.zip comes from the HuggingFace mirror (resumed with HTTP Range requests) or,
failing that, the dataset's Google Drive id through gdown; it is checked, unpacked into a temporary
folder and moved into place in one rename, so a dataset appears whole or not at all. A copy counts as
complete when every image its split lists is present and it was verified from the archive (MARKER) or
matches the published image counts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

from datasets.benchmarks import BENCHMARKS, spec_for
from datasets.split_json import IMAGE_EXTENSIONS
from engine.errors import UserError
from engine.utils import write_json

DEFAULT_BASE_URL = "https://huggingface.co/datasets/TahaKoleilat/BiomedCoOp/resolve/main"
BASE_URL_ENV = "BIOMEDCOOP_DATA_URL"
CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadFailed(Exception):
    """A network-side failure: worth trying the next source, then reported as a UserError."""


MARKER = ".download.json"  # written into DATA/NAME/ once an unpacked archive has been verified


def incomplete_reason(root: str, name: str) -> str | None:
    """None when DATA/NAME is verified complete, else why not.

    Complete means every image the split file lists is present, and the copy is known to be the
    real one: either this tool unpacked and counted it from the archive (MARKER records the count),
    or its split has exactly the published number of images per split.
    """
    dataset_dir = os.path.join(root, name)
    split_path = os.path.join(dataset_dir, f"split_{name}.json")
    image_dir = os.path.join(dataset_dir, name)
    if not (os.path.isfile(split_path) and os.path.isdir(image_dir)):
        return "not downloaded yet"
    try:
        with open(split_path, encoding="utf-8") as f:
            split = json.load(f)
        counts = {key: len(split[key]) for key in ("train", "val", "test")}
        rows = [row for key in ("train", "val", "test") for row in split[key]]
        missing = sum(not os.path.isfile(os.path.join(image_dir, row[0])) for row in rows)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return f"{split_path} is unreadable"
    if missing:
        return f"{missing} image(s) listed in {split_path} are missing"
    try:
        with open(os.path.join(dataset_dir, MARKER), encoding="utf-8") as f:
            if json.load(f).get("images") == len(rows):
                return None
    except (OSError, ValueError, AttributeError):
        pass
    published = spec_for(name).counts
    if published and counts == published:
        return None
    return (f"{dataset_dir} lists {counts} images per split, not the published {published} "
            "(a synthetic or partial copy?)")


def is_complete(root: str, name: str) -> bool:
    return incomplete_reason(root, name) is None


def http_download(url: str, part: str, desc: str) -> None:
    """Fetch url into `part`, resuming from its current size when the server honours Range."""
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "biomedcoop-toolkit"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the part is (probably) whole; the zip test decides
            return
        raise DownloadFailed(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadFailed(f"{url}: {getattr(err, 'reason', err)}") from err
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            have = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc
        ) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as err:
                raise DownloadFailed(f"{url}: connection lost after {bar.n} bytes ({err})") from err
    size = os.path.getsize(part)
    if total is not None and size < total:
        raise DownloadFailed(f"{url}: connection closed after {size} of {total} bytes")


def gdrive_download(file_id: str, part: str) -> None:
    try:
        import gdown  # lazy: only this fallback needs it
    except ImportError as err:
        raise DownloadFailed("gdown is not installed (pip install gdown) for the Google Drive fallback") from err
    try:
        result = gdown.download(id=file_id, output=part, quiet=False, resume=True)
    except Exception as err:  # gdown raises many kinds of errors; any of them means this source failed
        raise DownloadFailed(f"Google Drive id {file_id}: {err}") from err
    if not result or not os.path.isfile(part):
        raise DownloadFailed(f"Google Drive id {file_id}: nothing was downloaded")


def check_zip(path: str) -> str | None:
    """None when the archive reads back intact, else what is wrong with it."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"not a readable zip archive ({err})"
    return f"corrupt member {bad}" if bad else None


def fetch_zip(spec, root: str, base_url: str, use_gdrive: bool) -> str:
    """DATA/NAME.zip, complete and checked; downloaded unless already there."""
    zip_path = os.path.join(root, f"{spec.name}.zip")
    if os.path.isfile(zip_path):
        problem = check_zip(zip_path)
        if problem is None:
            return zip_path
        raise UserError(f"{zip_path} is {problem}. Delete it and run this command again to download it anew.")
    part = zip_path + ".part"
    url = f"{base_url.rstrip('/')}/{spec.name}.zip"
    failures = []
    # Each source resumes only its own partial file.
    sources = [("HuggingFace", part, lambda p: http_download(url, p, spec.name))]
    if use_gdrive and spec.gdrive_id:
        # gdown keeps its own resumable partial file beside this name and renames it here when complete.
        sources.append(("Google Drive", zip_path + ".gdrive", lambda p: gdrive_download(spec.gdrive_id, p)))
    for label, target, download in sources:
        try:
            download(target)
        except DownloadFailed as err:
            failures.append(f"{label}: {err}")
            continue
        problem = check_zip(target)
        if problem is None:
            os.replace(target, zip_path)
            return zip_path
        os.remove(target)  # a damaged download is not worth resuming
        failures.append(f"{label}: the downloaded file is {problem}")
    gdrive = f" or https://drive.google.com/uc?id={spec.gdrive_id}" if spec.gdrive_id else ""
    resume = f" (the partial download {part} resumes then)" if os.path.isfile(part) else ""
    raise UserError(
        f"Could not download {spec.name}:\n  " + "\n  ".join(failures) + "\n"
        f"Fetch {url}{gdrive} by hand and save it as {zip_path}, or run this command again{resume}."
    )


def find_dataset_folder(tree: str, name: str) -> str:
    """The folder inside an unpacked archive that holds split_NAME.json and the image folder NAME/."""
    for here, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d != "__MACOSX"]
        if f"split_{name}.json" in files and name in dirs:
            return here
        if os.path.relpath(here, tree).count(os.sep) >= 2:
            dirs[:] = []
    raise UserError(
        f"The {name} archive does not contain {name}/split_{name}.json beside the image folder {name}/{name}/; "
        "it is not a BiomedCoOp benchmark archive."
    )


def listed_images(dataset_dir: str, name: str) -> tuple[int, int]:
    """(rows the split file lists, how many of them exist on disk)."""
    try:
        with open(os.path.join(dataset_dir, f"split_{name}.json"), encoding="utf-8") as f:
            split = json.load(f)
        rels = [row[0] for key in ("train", "val", "test") for row in split[key]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return 1, 0
    return len(rels), sum(os.path.isfile(os.path.join(dataset_dir, name, rel)) for rel in rels)


def unpack(spec, zip_path: str, root: str) -> int:
    """Unpack into a temporary folder, then move the image folder and split file into DATA/NAME/.

    Returns the number of images the archive held in its image folder."""
    name = spec.name
    dataset_dir = os.path.join(root, name)
    for stale in os.listdir(root):  # left by an unpack that was killed
        if stale.startswith(f".{name}.unpack-"):
            shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=root)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for member in tqdm(members, desc=f"unpack {name}", unit="file"):
                zf.extract(member, tmp)
        src = find_dataset_folder(tmp, name)
        n_images = sum(
            f.lower().endswith(IMAGE_EXTENSIONS) for _, _, files in os.walk(os.path.join(src, name)) for f in files
        )
        if not os.path.isdir(dataset_dir):
            os.replace(src, dataset_dir)  # one rename: the dataset appears whole or not at all
            if src == tmp:  # mkdtemp's folder is private (0700); give it an ordinary folder's mode
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(dataset_dir, 0o777 & ~umask)
            return n_images
        # An earlier, incomplete copy: swap in the new images and split; keep few-shot and feature caches.
        image_dir = os.path.join(dataset_dir, name)
        if os.path.exists(image_dir):
            os.replace(image_dir, os.path.join(tmp, "old-images"))
        os.replace(os.path.join(src, name), image_dir)
        os.replace(os.path.join(src, f"split_{name}.json"), os.path.join(dataset_dir, f"split_{name}.json"))
        return n_images
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(name: str, root: str, base_url: str = DEFAULT_BASE_URL, use_gdrive: bool = True,
             keep_zip: bool = False) -> str:
    """Make DATA/NAME complete; returns what was done ('present' or 'downloaded')."""
    spec = spec_for(name)
    os.makedirs(root, exist_ok=True)
    reason = incomplete_reason(root, spec.name)
    if reason is None:
        return "present"
    if reason != "not downloaded yet":
        print(f"{spec.name}: {reason}; downloading the real archive", file=sys.stderr)
    zip_path = fetch_zip(spec, root, base_url, use_gdrive)
    n_images = unpack(spec, zip_path, root)
    dataset_dir = os.path.join(root, spec.name)
    listed, present = listed_images(dataset_dir, spec.name)
    if present < listed:
        raise UserError(
            f"{zip_path} unpacked, but {listed - present} image(s) listed in {dataset_dir}/split_{spec.name}.json "
            f"are missing. Run `python tools/check_data.py {spec.name} --root {root}` for the list."
        )
    # Verified from the archive itself: later runs trust this copy without re-downloading it.
    write_json({"images": listed, "archive": os.path.basename(zip_path), "archive_images": n_images,
                "archive_bytes": os.path.getsize(zip_path)}, os.path.join(dataset_dir, MARKER))
    if not keep_zip:
        os.remove(zip_path)
    return "downloaded"


def expand_names(names: list[str]) -> list[str]:
    if any(n.lower() == "all" for n in names):
        return list(BENCHMARKS)
    return list(dict.fromkeys(spec_for(n).name for n in names))
