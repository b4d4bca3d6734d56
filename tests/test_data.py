"""Tests of d2bench.data: the DAVIS loader, training clips and the synthetic DAVIS generator."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from d2bench.cli import main as cli_main
from d2bench.data import (
    DavisError,
    SynthSpec,
    TrainClips,
    clip_frame_ids,
    ensure_synthetic_davis,
    foreground,
    frame_names,
    list_sequences,
    pad_to_multiple,
    read_frames,
    read_masks,
    write_synthetic_davis,
)
from d2bench.data.images import write_ids
from d2bench.data.windows import (
    draw_clips,
    draw_random_sorted_clips,
    nonzero_foreground,
    truncated_window,
)

TINY = SynthSpec(sequences=4, val_sequences=2, frames=6, frame_jitter=2, height=24, width=40)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic set shared by the read-only tests."""
    return write_synthetic_davis(tmp_path_factory.mktemp("tiny") / "davis", TINY)


@pytest.fixture
def broken_root(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny set that a test may damage."""
    return Path(shutil.copytree(tiny_root, tmp_path / "davis"))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# --- the synthetic set reads back through the loader ----------------------------------------


def test_default_synthetic_set_reads_back(tmp_path: Path) -> None:
    spec = SynthSpec()
    root = write_synthetic_davis(tmp_path / "davis", spec)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["spec"] == spec.to_dict()
    train, val = list_sequences(root, "2017/train"), list_sequences(root, "2017/val")
    assert (len(train), len(val)) == (spec.train_sequences, spec.val_sequences)
    assert list_sequences(root, "2016/val") == val
    assert list_sequences(root, "2016/train") == train
    assert not set(train) & set(val)
    objects = []
    for name in train + val:
        frames, masks = read_frames(root, name), read_masks(root, name)
        length = meta["sequences"][name]["frames"]
        assert spec.frames - spec.frame_jitter <= length <= spec.frames
        assert frames.shape == (length, spec.height, spec.width, 3)
        assert frames.dtype == np.uint8 and masks.dtype == np.uint8
        assert masks.shape == (length, spec.height, spec.width)
        assert frame_names(root, name) == [f"{t:05d}" for t in range(length)]
        count = meta["sequences"][name]["objects"]
        assert set(np.unique(masks)) <= set(range(count + 1))
        # every annotated object is visible in the first frame (the semi-supervised reference)
        assert set(np.unique(masks[0])) == set(range(count + 1))
        np.testing.assert_array_equal(masks, read_masks(root, name, folder="Annotations"))
        objects.append(count)
        # the object moves: its mask is not the same in the first and the last frame
        assert not np.array_equal(masks[0], masks[-1])
    assert 1 in objects and 2 in objects
    for name in val:  # some validation sequences have two objects, some an occluder
        assert meta["sequences"][name]["objects"] in (1, 2)
    assert any(meta["sequences"][name]["objects"] == 2 for name in val)
    assert any(meta["sequences"][name]["occluded"] for name in val)


def test_annotations_are_palette_pngs(tiny_root: Path) -> None:
    name = list_sequences(tiny_root, "2017/train")[0]
    with Image.open(tiny_root / "Annotations" / "480p" / name / "00000.png") as image:
        assert image.mode == "P"
        ids = np.asarray(image)
    np.testing.assert_array_equal(ids, read_masks(tiny_root, name)[0])


def test_synthetic_scene_has_distractors_and_objects(tiny_root: Path) -> None:
    """Saturated pixels outside the annotation exist (distractors), and objects are warm."""
    name = list_sequences(tiny_root, "2017/train")[0]
    frames = read_frames(tiny_root, name).astype(np.float32)
    masks = foreground(read_masks(tiny_root, name)).astype(bool)
    saturation = frames.max(-1) - frames.min(-1)
    red_minus_blue = frames[..., 0] - frames[..., 2]
    assert red_minus_blue[masks].mean() > 60  # warm objects
    outside = ~masks
    colourful_outside = outside & (saturation > 80)
    assert colourful_outside.sum() > 20  # distractors are drawn but not annotated
    assert red_minus_blue[colourful_outside].mean() < 0  # and they are cool


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    first = _tree_bytes(write_synthetic_davis(tmp_path / "a", TINY))
    second = _tree_bytes(write_synthetic_davis(tmp_path / "b", TINY))
    assert first == second
    other = _tree_bytes(
        write_synthetic_davis(tmp_path / "c", SynthSpec(**{**TINY.to_dict(), "seed": 1}))
    )
    assert other.keys() & first.keys()
    assert any(
        other[key] != first[key] for key in other.keys() & first.keys() if key.endswith(".jpg")
    )


def test_ensure_reuses_matching_set_and_rebuilds_on_other_spec(tmp_path: Path) -> None:
    root = ensure_synthetic_davis(tmp_path / "davis", TINY)
    marker = root / "JPEGImages" / "480p" / "marker.txt"
    marker.write_text("kept if the set is reused")
    assert ensure_synthetic_davis(root, TINY) == root
    assert marker.exists()
    bigger = SynthSpec(**{**TINY.to_dict(), "frames": 7})
    ensure_synthetic_davis(root, bigger)
    assert not marker.exists()
    assert json.loads((root / "meta.json").read_text())["spec"]["frames"] == 7
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no leftovers


def test_generator_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not a synthetic set")
    with pytest.raises(DavisError, match="refusing to overwrite"):
        write_synthetic_davis(tmp_path, TINY)
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames": 1}, "frames"),
        ({"val_sequences": 4}, "val_sequences"),
        ({"height": 8}, "height"),
        ({"frame_jitter": 5}, "frame_jitter"),
    ],
)
def test_bad_spec_is_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthSpec(**{**TINY.to_dict(), **change})


# --- clip windows ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 3, 7, 8, 9, 20])
@pytest.mark.parametrize(("clip_len", "window"), [(8, 4), (4, 2), (3, 4), (1, 1)])
def test_clip_windows_are_in_order_inside_the_video_and_hold_the_frame(
    length: int, clip_len: int, window: int
) -> None:
    for frame in range(length):
        ids = clip_frame_ids(frame, length, clip_len, window)
        assert len(ids) == clip_len
        assert ids == sorted(ids)
        assert frame in ids
        assert ids[0] >= 0 and ids[-1] < length
        if length >= clip_len:  # consecutive frames, inside the window where it fits
            assert ids == list(range(ids[0], ids[0] + clip_len))
            if window <= frame < length - window:
                assert frame - window <= ids[0] and ids[-1] < frame + window
        else:  # a short video repeats its frames in place and covers all of them
            assert set(ids) == set(range(length))


def test_clip_windows_at_video_borders() -> None:
    assert clip_frame_ids(0, 20) == list(range(8))
    assert clip_frame_ids(10, 20) == list(range(6, 14))  # [i - 4, i + 4)
    assert clip_frame_ids(19, 20) == list(range(12, 20))
    assert clip_frame_ids(2, 3) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_random_sorted_clips_are_the_originals_distribution() -> None:
    """sorted(random.choices(window truncated at the ends, k=8)): repeats, truncation."""
    lengths = [3, 9, 400]
    clips = draw_random_sorted_clips(lengths, seed=0)
    assert len(clips) == sum(lengths)  # one per frame: an epoch covers every frame once
    starts = np.cumsum([0, *lengths])
    for video, length in enumerate(lengths):
        for frame in range(length):
            ids = clips[starts[video] + frame]
            window = truncated_window(frame, length)
            assert len(ids) == 8 and list(ids) == sorted(ids)
            assert set(ids) <= set(window)
    long = clips[starts[2] : starts[3]]
    assert truncated_window(0, 400) == range(0, 4) and truncated_window(399, 400) == range(395, 400)
    assert set(long[0]) <= {0, 1, 2, 3}  # truncated, not shifted to 0..7
    assert set(long[399]) <= {395, 396, 397, 398, 399}
    assert set(clips[0]) <= {0, 1, 2} and set(clips[1]) <= {0, 1, 2}  # a 3-frame video
    # with replacement: 8 draws from 8 frames repeat one unless all differ (p = 8!/8^8)
    assert sum(len(set(ids)) < 8 for ids in long[4:396]) > 380
    # uniform over the window: each offset -4..3 about 1/8 of the draws in the middle
    offsets = np.array([np.array(ids) - frame for frame, ids in enumerate(long)][4:396])
    shares = np.bincount(offsets.ravel() + 4, minlength=8) / offsets.size
    np.testing.assert_allclose(shares, 1 / 8, atol=0.015)
    # the frame itself is not forced into its clip
    assert any(frame not in ids for frame, ids in enumerate(long))


def test_random_sorted_clips_are_seeded_per_cell_and_rank() -> None:
    lengths = [30, 12]
    first = draw_random_sorted_clips(lengths, seed=3, rank=0)
    assert draw_random_sorted_clips(lengths, seed=3, rank=0) == first  # reproducible
    assert draw_random_sorted_clips(lengths, seed=3, rank=1) != first  # ranks differ
    assert draw_random_sorted_clips(lengths, seed=4, rank=0) != first  # seeds differ
    assert draw_clips(lengths, "random-sorted", seed=3, rank=0) == first


def test_consecutive_clips_are_unchanged() -> None:
    lengths = [3, 20]
    expected = [tuple(clip_frame_ids(f, n)) for n in lengths for f in range(n)]
    assert draw_clips(lengths, "consecutive", seed=5, rank=1) == expected
    with pytest.raises(ValueError, match=r"data\.clip_sampling.*random-sorted, consecutive"):
        draw_clips(lengths, "shuffled")


def test_train_clips_draw_once_per_build_from_seed_and_rank(tiny_root: Path) -> None:
    kwargs = {"clip_len": 8, "window": 4, "size": None}
    clips = TrainClips(tiny_root, "2017/train", seed=1, **kwargs)
    assert clips.clip_sampling == "random-sorted"  # the original's, by default
    lengths = [clips.lengths[name] for name in clips.sequences]
    drawn = [list(ids) for ids in draw_random_sorted_clips(lengths, seed=1, rank=0)]
    assert [clips.frame_ids(i) for i in range(len(clips))] == drawn
    assert [clips[i]["frame_ids"] for i in range(len(clips))] == drawn  # same every access
    rebuilt = TrainClips(tiny_root, "2017/train", seed=1, **kwargs)
    assert [rebuilt.frame_ids(i) for i in range(len(clips))] == drawn
    other_rank = TrainClips(tiny_root, "2017/train", seed=1, rank=1, **kwargs)
    assert [other_rank.frame_ids(i) for i in range(len(clips))] != drawn
    # a repeated frame is the same image at both positions of the clip
    index = next(i for i, ids in enumerate(drawn) if ids[0] == ids[1])
    sample = clips[index]
    assert torch.equal(sample["frames"][:, 0], sample["frames"][:, 1])


def test_clip_sampling_is_a_checked_config_key() -> None:
    from d2bench.core.config import ConfigError, parse_cell_config

    assert parse_cell_config({"data": {"root": "x"}}).data.clip_sampling == "random-sorted"
    with pytest.raises(ConfigError, match=r"data\.clip_sampling"):
        parse_cell_config({"data": {"root": "x", "clip_sampling": "shuffled"}})


def test_clip_longer_than_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        clip_frame_ids(0, 20, clip_len=8, window=2)


# --- TrainClips ----------------------------------------------------------------------------


def test_train_clips_samples(tiny_root: Path) -> None:
    clips = TrainClips(
        tiny_root,
        "2017/train",
        clip_len=4,
        window=2,
        size=None,
        pad_multiple=32,
        clip_sampling="consecutive",
    )
    lengths = clips.lengths
    assert len(clips) == sum(lengths.values())
    assert set(clips.sequences) == set(list_sequences(tiny_root, "2017/train"))
    sample = clips[0]
    assert sample["frames"].dtype == torch.float32 and sample["masks"].dtype == torch.float32
    assert sample["frames"].shape == (3, 4, 32, 64)  # 24×40 padded to multiples of 32
    assert sample["masks"].shape == (1, 4, 32, 64)
    assert sample["frames"].min() >= 0.0 and sample["frames"].max() <= 1.0
    assert set(torch.unique(sample["masks"]).tolist()) <= {0.0, 1.0}
    assert sample["masks"].sum() > 0
    # 24×40 padded centred: 4 rows above and below, 12 columns left and right
    padding = torch.ones(32, 64, dtype=torch.bool)
    padding[4:28, 12:52] = False
    assert torch.all(sample["frames"][..., padding] == 0)
    assert torch.all(sample["masks"][..., padding] == 0)
    # the unpadded content is exactly the frames and binarised masks on disk
    name, frame_ids = sample["sequence"], sample["frame_ids"]
    frames = read_frames(tiny_root, name)[frame_ids]
    masks = foreground(read_masks(tiny_root, name))[frame_ids]
    expected = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(sample["frames"][:, :, 4:28, 12:52], expected)
    np.testing.assert_array_equal(sample["masks"][0, :, 4:28, 12:52].numpy(), masks)
    # the last sample is the last frame of the last sequence, its clip shifted inside the video
    last = clips[len(clips) - 1]
    length = lengths[last["sequence"]]
    assert last["frame_ids"] == list(range(length - 4, length))
    assert clips[-1]["frame_ids"] == last["frame_ids"]
    with pytest.raises(IndexError):
        clips[len(clips)]


def test_train_clips_resize_and_pad_to_paper_size(tiny_root: Path) -> None:
    clips = TrainClips(tiny_root, "2016/val", clip_len=8, window=4, size=(480, 854))
    sample = clips[3]
    assert sample["frames"].shape == (3, 8, 480, 864)
    assert sample["masks"].shape == (1, 8, 480, 864)
    assert sample["frame_ids"] == sorted(sample["frame_ids"])
    assert torch.all(sample["masks"][..., :5] == 0) and torch.all(sample["masks"][..., 859:] == 0)
    assert set(torch.unique(sample["masks"]).tolist()) == {0.0, 1.0}


def test_train_clips_are_deterministic(tiny_root: Path) -> None:
    first = TrainClips(tiny_root, size=(48, 80))
    second = TrainClips(tiny_root, size=(48, 80), cache_bytes=0)
    for index in (0, 5, len(first) - 1):
        a, b = first[index], second[index]
        assert a["frame_ids"] == b["frame_ids"] and a["sequence"] == b["sequence"]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
        assert torch.equal(a["frames"], first[index]["frames"])  # cached copy unchanged


def test_void_is_background() -> None:
    ids = np.array([[0, 1, 2, 254, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(foreground(ids), [[0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(nonzero_foreground(ids), [[0, 1, 1, 1, 1]])


def test_unsupervised_labels_count_void_as_foreground(broken_root: Path) -> None:
    """The original trains on Annotations_unsupervised with any non-zero value as foreground."""
    name = _first_sequence(broken_root)
    for folder in ("Annotations", "Annotations_unsupervised"):
        png = broken_root / folder / "480p" / name / "00000.png"
        with Image.open(png) as image:
            ids = np.array(image)
        ids[0:3, 0:5] = 255  # a void patch in a background corner
        write_ids(png, ids)
    kwargs = {"clip_len": 2, "window": 1, "size": None, "clip_sampling": "consecutive"}
    unsupervised = TrainClips(broken_root, "2017/train", **kwargs)
    semi = TrainClips(broken_root, "2017/train", mask_folder="Annotations", **kwargs)
    assert unsupervised.sequences[0] == name and unsupervised.frame_ids(0) == [0, 1]
    box = (slice(None), 0, slice(4, 7), slice(12, 17))  # the patch after centred padding
    assert torch.all(unsupervised[0]["masks"][box] == 1)
    assert torch.all(semi[0]["masks"][box] == 0)


# --- padding ---------------------------------------------------------------------------------


def test_pad_to_multiple_centres_and_crops_back() -> None:
    tensor = torch.rand(2, 3, 480, 854) + 1
    padded, box = pad_to_multiple(tensor, 32)
    assert padded.shape == (2, 3, 480, 864)
    assert (box.top, box.left, box.height, box.width) == (0, 5, 480, 854)  # 5 + 854 + 5
    assert padded[..., :5].abs().sum() == 0 and padded[..., 859:].abs().sum() == 0
    assert torch.equal(padded[..., 5:859], tensor) and torch.equal(box.crop(padded), tensor)
    array = np.arange(1, 36, dtype=np.uint8).reshape(5, 7)
    padded_array, box = pad_to_multiple(array, 4)
    assert padded_array.shape == (8, 8) and padded_array.sum() == array.sum()
    # odd padding: the extra row goes below, the extra column to the right
    assert (box.top, box.left) == (1, 0)
    np.testing.assert_array_equal(padded_array[1:6, 0:7], array)
    np.testing.assert_array_equal(box.crop(padded_array), array)
    same, box = pad_to_multiple(torch.zeros(64, 96), 32)
    assert same.shape == (64, 96) and (box.top, box.left) == (0, 0)
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(array, 0)


# --- loader errors on a broken copy ----------------------------------------------------------


def _first_sequence(root: Path) -> str:
    return list_sequences(root, "2017/train")[0]


def test_error_root_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DavisError, match=re.escape(str(missing))):
        list_sequences(missing, "2017/train")
    with pytest.raises(DavisError, match="nowhere"):
        TrainClips(missing)


def test_error_imageset_missing_or_empty(broken_root: Path) -> None:
    with pytest.raises(DavisError, match=r"ImageSets/2019/val\.txt"):
        list_sequences(broken_root, "2019/val")
    empty = broken_root / "ImageSets" / "2017" / "train.txt"
    empty.write_text("\n\n")
    with pytest.raises(DavisError, match=r"ImageSets/2017/train\.txt.*no sequences"):
        list_sequences(broken_root, "2017/train")
    with pytest.raises(DavisError, match=r"2017/train\.txt"):
        TrainClips(broken_root, "2017/train")
    with pytest.raises(DavisError, match="year"):
        list_sequences(broken_root, "val")


def test_error_sequence_folder_missing(broken_root: Path) -> None:
    (broken_root / "ImageSets" / "2017" / "train.txt").write_text("no-such-video\n")
    with pytest.raises(DavisError, match="no-such-video"):
        TrainClips(broken_root, "2017/train")
    with pytest.raises(DavisError, match=r"no-such-video.*not found"):
        read_frames(broken_root, "no-such-video")


def test_error_no_frames(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    for jpeg in (broken_root / "JPEGImages" / "480p" / name).glob("*.jpg"):
        jpeg.unlink()
    with pytest.raises(DavisError, match=f"{name}: no frames"):
        frame_names(broken_root, name)


def test_error_missing_annotation(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    missing = broken_root / "Annotations_unsupervised" / "480p" / name / "00001.png"
    missing.unlink()
    with pytest.raises(DavisError, match=f"{name}.*annotations .* for .* frames"):
        read_masks(broken_root, name)
    with pytest.raises(DavisError, match=f"Annotations_unsupervised/480p/{name}"):
        TrainClips(broken_root, "2017/train")
    # same count, wrong name: the missing file is named
    (missing.parent / "00099.png").write_bytes((missing.parent / "00000.png").read_bytes())
    with pytest.raises(DavisError, match=r"00001\.png"):
        read_masks(broken_root, name)


def test_error_corrupt_jpeg(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    jpeg = broken_root / "JPEGImages" / "480p" / name / "00002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:40])
    with pytest.raises(DavisError, match=rf"{name}/00002\.jpg.*unreadable"):
        read_frames(broken_root, name)
    clips = TrainClips(broken_root, "2017/train", clip_len=2, window=1, size=None)
    with pytest.raises(DavisError, match=r"00002\.jpg"):
        clips[2]


def test_error_corrupt_png(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    png = broken_root / "Annotations" / "480p" / name / "00000.png"
    png.write_bytes(b"not a png at all")
    with pytest.raises(DavisError, match=rf"Annotations/480p/{name}/00000\.png.*unreadable"):
        read_masks(broken_root, name, folder="Annotations")


def test_error_size_mismatch(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    png = broken_root / "Annotations_unsupervised" / "480p" / name / "00001.png"
    with Image.open(png) as image:
        image.crop((0, 0, TINY.width - 4, TINY.height)).save(png)
    with pytest.raises(DavisError, match=r"00001\.png: size 24×36 differs from 24×40"):
        read_masks(broken_root, name)
    clips = TrainClips(broken_root, "2017/train", clip_len=2, window=1, size=None)
    with pytest.raises(DavisError, match=rf"{name}/00001\.png: size"):
        clips[1]
    jpeg = broken_root / "JPEGImages" / "480p" / name / "00003.jpg"
    Image.new("RGB", (TINY.width, TINY.height + 2)).save(jpeg)
    with pytest.raises(DavisError, match=r"00003\.jpg: size 26×40"):
        read_frames(broken_root, name)


def test_error_colour_annotation_refused(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    png = broken_root / "Annotations" / "480p" / name / "00000.png"
    with Image.open(png) as image:
        image.convert("RGB").save(png)
    with pytest.raises(DavisError, match=r"00000\.png.*mode 'RGB'"):
        read_masks(broken_root, name, folder="Annotations")


def test_greyscale_davis2016_annotations_read_as_one_object(broken_root: Path) -> None:
    name = _first_sequence(broken_root)
    folder = broken_root / "Annotations" / "480p" / name
    expected = foreground(read_masks(broken_root, name, folder="Annotations"))
    for png in folder.glob("*.png"):
        with Image.open(png) as image:
            ids = np.asarray(image)
        Image.fromarray(np.where(foreground(ids) > 0, 255, 0).astype(np.uint8)).save(png)
    np.testing.assert_array_equal(read_masks(broken_root, name, folder="Annotations"), expected)


# --- command line ----------------------------------------------------------------------------


def test_cli_synth_writes_the_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--sequences", "3", "--frames", "5"]
    assert cli_main([*args, "--height", "32", "--width", "48", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert "[3/3]" in printed
    for year in ("2016", "2017"):
        for split in ("train", "val"):
            assert (out / "ImageSets" / year / f"{split}.txt").is_file()
    names = list_sequences(out, "2017/train") + list_sequences(out, "2017/val")
    assert len(names) == 3
    for name in names:
        jpegs = sorted((out / "JPEGImages" / "480p" / name).glob("*.jpg"))
        assert jpegs and jpegs[0].name == "00000.jpg"
        for folder in ("Annotations", "Annotations_unsupervised"):
            pngs = sorted((out / folder / "480p" / name).glob("*.png"))
            assert [png.stem for png in pngs] == [jpeg.stem for jpeg in jpegs]
        assert read_frames(out, name).shape[1:] == (32, 48, 3)
    assert json.loads((out / "meta.json").read_text())["spec"]["seed"] == 7


def test_cli_synth_bad_input_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli_main(["data", "synth", "--out", str(tmp_path / "x"), "--frames", "1"]) == 2
    assert "frames must be ≥ 2" in capsys.readouterr().err
    (tmp_path / "keep.txt").write_text("user data")
    assert cli_main(["data", "synth", "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
