"""Image folders for training are read by the `datasets` library's imagefolder builder, in its layouts."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gen.training.data import ImageFolderDataset


def write_images(folder, count, shade=lambda i: 20 * i, size=12):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (size, size), (shade(i), 0, 255 - shade(i))).save(folder / f"{i}.png")


def red(item) -> float:
    return (item["pixel_values"][0].mean().item() + 1) / 2 * 255


def test_class_subfolders_give_sorted_class_labels(tmp_path):
    write_images(tmp_path / "dog", 2, shade=lambda i: 200)
    write_images(tmp_path / "cat", 3, shade=lambda i: 10)
    data = ImageFolderDataset(tmp_path, resolution=8)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2 and len(data) == 5
    for i in range(len(data)):  # every image carries its own folder's label
        item = data[i]
        assert item["label"] == (1 if red(item) > 100 else 0)
        assert item["pixel_values"].shape == (3, 8, 8) and -1 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1


def test_metadata_csv_with_a_named_caption_column(tmp_path):
    write_images(tmp_path, 4)
    with open(tmp_path / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption"])
        writer.writerows([[f"{i}.png", f"square {i}"] for i in range(4)])
    data = ImageFolderDataset(tmp_path, resolution=8, caption_column="caption")
    assert data.labels is None and sorted(data.captions) == [f"square {i}" for i in range(4)]
    for i in range(4):  # caption i belongs to the image of shade 20 i
        item = data[i]
        assert item["caption"] == f"square {round(red(item) / 20)}"


def test_metadata_jsonl_labels_follow_their_files(tmp_path):
    write_images(tmp_path, 6)
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"{i}.png", "label": i % 3}) for i in range(6)))
    data = ImageFolderDataset(tmp_path, resolution=8)
    assert data.num_classes == 3 and data.class_names is None
    assert all(data[i]["label"] == round(red(data[i]) / 20) % 3 for i in range(6))


def test_grayscale_training_reads_one_channel(tmp_path):
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b", 2)
    item = ImageFolderDataset(tmp_path, resolution=8, channels=1)[0]
    assert item["pixel_values"].shape == (1, 8, 8) and torch.isfinite(item["pixel_values"]).all()


@pytest.mark.parametrize(
    "rows, pattern",
    [
        (["{not json"], r"data: .*metadata.jsonl line 1 is not a JSON object with a file_name"),
        ([json.dumps({"file_name": "0.png", "label": "three"}), json.dumps({"file_name": "1.png", "label": 1})], r"data: the label of 0.png is 'three'"),
        (
            [json.dumps({"file_name": "0.png", "colour": "red"}), json.dumps({"file_name": "1.png", "colour": "blue"})],
            r"data: the metadata .* must give every image a 'label' or a 'text'",
        ),
    ],
)
def test_bad_metadata_is_refused_naming_the_line_or_file(tmp_path, rows, pattern):
    write_images(tmp_path, 2)
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows))
    with pytest.raises(ValueError, match=pattern):
        ImageFolderDataset(tmp_path, resolution=8)


def test_the_folder_is_what_datasets_reads(tmp_path):
    from datasets import load_dataset

    write_images(tmp_path / "x", 3)
    write_images(tmp_path / "y", 2, shade=lambda i: 250)
    ours = ImageFolderDataset(tmp_path, resolution=12)
    theirs = load_dataset("imagefolder", data_dir=str(tmp_path), split="train")
    assert ours.labels == list(theirs["label"])
    for i in range(len(theirs)):
        expected = np.asarray(theirs[i]["image"].convert("RGB"), dtype=np.float32) / 127.5 - 1
        assert np.allclose(ours[i]["pixel_values"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
