"""Every CLI command turns a bad file into one line on stderr (``posert: error: …``) and a non-zero
exit status, never a traceback; a crafted checkpoint runs no code. ``BAD_FILES`` is the table of
cases (``python -m tests.integration.test_cli_errors`` prints it with each message)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posert.cli import main

FIXTURE = Path(__file__).parents[1] / "data" / "cmu_01_01.npz"
CLIP = Path(__file__).parents[1] / "data" / "sports2d_clip.mp4"
LANDMARKS = Path(__file__).parents[1] / "data" / "sports2d_clip_blazepose.npz"
MARKER = "posert_crafted_checkpoint_ran"


class _Payload:
    """Unpickling this runs a shell command (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _make(kind: str, tmp: Path) -> Path:
    """Write the bad file of one case into ``tmp``; returns its path."""
    from posert.models.io import load_lifter, save_lifter

    p = tmp / kind
    if kind == "missing.npz":
        return p
    if kind == "directory":
        p.mkdir()
    elif kind == "single_array.npy":
        np.save(p, np.zeros((10, 17, 3)))
    elif kind == "random_bytes.npz":
        p.write_bytes(np.random.default_rng(1).bytes(4096))
    elif kind == "no_arrays.npz":
        np.savez(p)
    elif kind == "wrong_shape.npz":
        np.savez(p, x=np.zeros((10, 16, 3)))
    elif kind == "nan.npz":
        a = np.zeros((10, 17, 3))
        a[3, 2, 1] = np.nan
        np.savez(p, x=a)
    elif kind == "object_array.npz":
        np.savez(p, x=np.array([{"a": 1}] * 3, dtype=object))
    elif kind == "complex.npz":
        np.savez(p, x=np.zeros((10, 17, 3), np.complex64))
    elif kind == "text.npz":
        p.write_text("not an archive\n")
    elif kind == "crafted.pt":
        torch.save({"kind": "lifter", "config": {}, "state_dict": {}, "x": _Payload(tmp / MARKER)}, p)
    elif kind == "random_bytes.pt":
        p.write_bytes(np.random.default_rng(2).bytes(4096))
    elif kind == "truncated.pt":
        save_lifter(load_lifter(), tmp / "full.pt")
        p.write_bytes((tmp / "full.pt").read_bytes()[:50_000])
    elif kind == "bitflip.pt":
        save_lifter(load_lifter(), tmp / "full.pt")
        ck = torch.load(tmp / "full.pt", weights_only=True)
        w = ck["state_dict"]["head.weight"]
        w.view(torch.int32)[0, 0] ^= 1 << 20  # one flipped bit in one weight
        torch.save(ck, p)
    elif kind == "refiner_as_lifter.pt":
        p.write_bytes((Path(__file__).parents[2] / "checkpoints" / "refiner.pt").read_bytes())
    elif kind == "plain_pickle.pt":
        with open(p, "wb") as f:
            pickle.dump({"kind": "lifter"}, f)
    elif kind == "bad.toml":
        p.write_text("[backend\nname = 1")
    elif kind == "unknown_key.toml":
        p.write_text("[backend]\ncolour = 'red'\n")
    elif kind == "bad_value.json":
        p.write_text(json.dumps({"refiner": {"steps": -1}}))
    elif kind == "random_bytes.mp4":
        p.write_bytes(np.random.default_rng(3).bytes(8192))
    elif kind == "bad_detections.npz":
        np.savez(p, x=np.zeros(3))
    elif kind == "no_intrinsics.yaml":
        p.write_text("image_width: 320\nimage_height: 240\n")
    elif kind == "not_a_rotation.json":
        p.write_text(json.dumps({"K": [[400, 0, 160], [0, 400, 120], [0, 0, 1]], "R": [[2, 0, 0], [0, 1, 0], [0, 0, 1]],
                                 "width": 320, "height": 240}))
    return p


E = ["eval", "--cameras", "ring", "--json", "{tmp}/o.json"]
#: (command with {file} and {tmp}, the bad file, a word the one-line message must hold)
BAD_FILES = [
    (E + ["--motion", "{file}"], "missing.npz", "no motion file"),
    (E + ["--motion", "{file}"], "directory", "not a file"),
    (E + ["--motion", "{file}"], "single_array.npy", "single array"),
    (E + ["--motion", "{file}"], "random_bytes.npz", "not an .npz archive"),
    (E + ["--motion", "{file}"], "text.npz", "not an .npz archive"),
    (E + ["--motion", "{file}"], "no_arrays.npz", "no sequences"),
    (E + ["--motion", "{file}"], "wrong_shape.npz", "(T ≥ 3, 17, 3)"),
    (E + ["--motion", "{file}"], "nan.npz", "non-finite"),
    (E + ["--motion", "{file}"], "object_array.npz", "unreadable"),
    (E + ["--motion", "{file}"], "complex.npz", "float"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "crafted.pt", "not a loadable posert checkpoint"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "random_bytes.pt", "not a loadable posert checkpoint"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "truncated.pt", "not a loadable posert checkpoint"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "bitflip.pt", "checksum"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "refiner_as_lifter.pt", "expected 'lifter'"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "plain_pickle.pt", "not a"),
    (E + ["--motion", str(FIXTURE), "--lifter", "{file}"], "missing.npz", "not found"),
    (E + ["--motion", str(FIXTURE), "--refiner", "{file}"], "directory", "directory"),
    (E + ["--motion", str(FIXTURE), "--config", "{file}"], "bad.toml", "not a valid toml"),
    (E + ["--motion", str(FIXTURE), "--config", "{file}"], "unknown_key.toml", "colour"),
    (E + ["--motion", str(FIXTURE), "--config", "{file}"], "bad_value.json", "refiner.steps"),
    (["bench", "--json", "{tmp}/b.json", "--cameras", "ring", "--motion", "{file}"], "no_arrays.npz", "no sequences"),
    (["export", "--out", "{tmp}/onnx", "--lifter", "{file}"], "crafted.pt", "not a loadable posert checkpoint"),
    (["run", "--video", "{file}", "--detections", str(LANDMARKS)], "missing.npz", "no video"),
    (["run", "--video", "{file}", "--detections", str(LANDMARKS)], "random_bytes.mp4", "video"),
    (["run", "--video", str(CLIP), "--detections", "{file}"], "bad_detections.npz", "landmark recording"),
    (["run", "--video", str(CLIP), "--detections", "{file}"], "missing.npz", "no landmark recording"),
    (["run", "--video", str(CLIP), "--detections", str(LANDMARKS), "--calib", "{file}"], "missing.npz",
     "no calibration"),
    (["run", "--video", str(CLIP), "--detections", str(LANDMARKS), "--calib", "{file}"], "no_intrinsics.yaml",
     "no intrinsic matrix"),
    (["run", "--video", str(CLIP), "--detections", str(LANDMARKS), "--calib", "{file}"], "not_a_rotation.json",
     "not a rotation"),
    (["config", "--config", "{file}"], "unknown_key.toml", "colour"),
]


def run_case(args: list[str], kind: str, tmp: Path, capsys) -> tuple[int, str, Path]:
    path = _make(kind, tmp)
    code = main([a.format(file=path, tmp=tmp) for a in args])
    return code, capsys.readouterr().err, path


@pytest.mark.parametrize("args,kind,words", BAD_FILES, ids=[f"{a[0]}-{a[-2] if '{file}' in a[-1] else ''}-{k}"
                                                            for a, k, _ in BAD_FILES])
def test_bad_file_is_one_line_and_a_nonzero_exit(args, kind, words, tmp_path, capsys):
    code, err, _ = run_case(args, kind, tmp_path, capsys)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("posert") and "Traceback" not in err, err
    assert words.lower() in lines[0].lower(), lines[0]
    assert not (tmp_path / MARKER).exists()  # a crafted checkpoint ran no code


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    """Unpickling the crafted file the usual way would run its command; posert's loader refuses it
    before any of it runs."""
    from posert.models.io import CheckpointError, load_lifter

    path = _make("crafted.pt", tmp_path)
    with pytest.raises(CheckpointError, match="not a loadable posert checkpoint"):
        load_lifter(path)
    assert not (tmp_path / MARKER).exists()
    torch.load(path, weights_only=False)  # what an unsafe loader does: the payload runs
    assert (tmp_path / MARKER).exists()



@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95"]), body=st.binary(max_size=2048))
def test_any_bytes_as_a_checkpoint_are_a_checkpoint_error(head, body, tmp_path):
    """Whatever a checkpoint file holds (arbitrary bytes, or bytes behind a zip or pickle header,
    where torch's safe unpickler raises IndexError, KeyError, ... of its own), loading it raises
    CheckpointError, which the CLI prints as one line."""
    from posert.models.io import CheckpointError, load_lifter

    path = tmp_path / "any.pt"
    path.write_bytes(head + body)
    with pytest.raises(CheckpointError):
        load_lifter(path)


if __name__ == "__main__":  # the table of cases, with the message and the exit status of each
    import contextlib
    import io
    import tempfile

    print("| command | bad file | exit | message |\n|---|---|---|---|")
    for args, kind, _ in BAD_FILES:
        with tempfile.TemporaryDirectory() as d:
            path = _make(kind, Path(d))
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                code = main([a.format(file=path, tmp=d) for a in args])
            msg = buf.getvalue().strip().replace(d, "…").replace("|", "/")
            flag = next((args[i] for i in range(len(args) - 1) if args[i + 1] == "{file}"), "")
            print(f"| posert {args[0]} {flag} | {kind} | {code} | {msg} |")
