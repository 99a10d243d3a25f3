"""core.engine.evaluate against a direct torch computation; datasets with class names and colour images."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from history_helpers import SMALL, sample_data
from support import shared_dataset_dir
from core.config import Phase, RunConfig
from core.engine.data import CLASS_NAMES, SOURCE_FULL, DataError, ImageDataset, load_dataset
from core.engine.evaluate import Evaluation, ModelLoadError, build_model, display_images, evaluate, evaluate_weights
from core.runs.models import load_run_model
from core.engine.model import build_mlp
from core.runs.training_run import TrainingRun
from core.runs.store import Store



def synthetic(name: str, shape, n_train=600, n_test=300, seed=0) -> ImageDataset:
    """Learnable uint8 images: class c brightens its own band of pixels."""
    g = torch.Generator().manual_seed(seed)
    features = math.prod(shape)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 80, (n, features), generator=g)
        band = features // 10
        for c in range(10):
            images[labels == c, c * band:(c + 1) * band] += 150
        return images.clamp(0, 255).to(torch.uint8).view(n, *shape), labels

    (train_x, train_y), (test_x, test_y) = make(n_train), make(n_test)
    return ImageDataset(name, train_x, train_y, test_x, test_y, CLASS_NAMES[name], SOURCE_FULL, "synthetic")


@pytest.fixture(scope="module")
def sample():
    return sample_data()


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory):
    """A run trained on the real MNIST sample, stored with its weights."""
    store = Store(tmp_path_factory.mktemp("eval") / "runs.db")
    run = TrainingRun(SMALL.replace(hidden_sizes=(24, 12)), store=store, dataset=sample)
    run.run_schedule([Phase(2, 0.5)])
    return store, run


def reference(state_dict, images, labels, activation=nn.ReLU):
    """The same MLP written out with plain torch, evaluated in one batch."""
    linears = sorted({k.split(".")[0] for k in state_dict}, key=int)
    layers = []
    for i, index in enumerate(linears):
        weight = state_dict[f"{index}.weight"]
        layer = nn.Linear(weight.shape[1], weight.shape[0])
        layer.load_state_dict({"weight": weight, "bias": state_dict[f"{index}.bias"]})
        layers.append(layer)
        if i < len(linears) - 1:
            layers.append(activation())
    model = nn.Sequential(*layers)
    with torch.no_grad():
        logits = model(images.reshape(len(images), -1).float() / 255)
    return logits


def test_evaluation_matches_a_direct_torch_computation(trained, sample):
    store, run = trained
    loaded = load_run_model(store, run.id)
    ev = evaluate(loaded.model(), sample)
    logits = reference(loaded.state_dict, sample.test_images, sample.test_labels)
    predicted = logits.argmax(1)
    labels = sample.test_labels
    assert ev.n == len(labels) == 1000
    assert ev.accuracy == pytest.approx((predicted == labels).double().mean().item(), abs=1e-12)
    assert ev.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    np.testing.assert_array_equal(ev.predicted, predicted.numpy())
    np.testing.assert_array_equal(ev.labels, labels.numpy())
    np.testing.assert_allclose(ev.confidence, logits.softmax(1).max(1).values.numpy(), rtol=1e-5)
    confusion = np.zeros((10, 10), dtype=np.int64)
    for t, p in zip(labels.tolist(), predicted.tolist()):
        confusion[t, p] += 1
    np.testing.assert_array_equal(ev.confusion, confusion)
    for c in range(10):
        rows = labels == c
        assert ev.per_class_accuracy[c] == pytest.approx((predicted[rows] == c).double().mean().item())
    assert ev.mistakes == int((predicted != labels).sum())
    # and the same as the number the run recorded when its phase ended (Trainer.evaluate_test)
    assert ev.accuracy == pytest.approx(run.test_acc, abs=1e-9)
    assert ev.loss == pytest.approx(run.test_loss, rel=1e-5)


def test_chunked_evaluation_equals_one_pass(trained, sample):
    store, run = trained
    model = load_run_model(store, run.id).model()
    whole, chunked = evaluate(model, sample), evaluate(model, sample, chunk=97, threads=1)
    assert chunked.accuracy == whole.accuracy
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-6)
    np.testing.assert_array_equal(chunked.confusion, whole.confusion)


def test_sample_indices_mistakes_most_confident_first(trained, sample):
    store, run = trained
    ev = evaluate(load_run_model(store, run.id).model(), sample)
    mistakes = ev.sample_indices(1000, only_mistakes=True)
    assert len(mistakes) == ev.mistakes > 0
    assert all(ev.predicted[i] != ev.labels[i] for i in mistakes)
    confidence = [ev.confidence[i] for i in mistakes]
    assert confidence == sorted(confidence, reverse=True)
    everything = ev.sample_indices(ev.n)  # mistakes first (before: test order, so the grid opened on zeros)
    assert everything[:len(mistakes)] == mistakes and sorted(everything) == list(range(ev.n))
    first_correct = everything[len(mistakes):len(mistakes) + 10]
    assert sorted(ev.labels[first_correct].tolist()) == list(range(10))  # one of each class, not ten zeros
    sevens = ev.sample_indices(10, true_class=7)
    assert len(sevens) == 10 and all(ev.labels[i] == 7 for i in sevens)
    assert all(ev.labels[i] == 3 and ev.predicted[i] != 3 for i in ev.sample_indices(50, True, true_class=3))


def test_weights_that_do_not_fit_the_config_are_refused():
    config = RunConfig(hidden_sizes=(32,))
    weights = build_mlp(RunConfig(hidden_sizes=(16,)), 784, 10).state_dict()
    with pytest.raises(ModelLoadError, match=r"0.weight has shape \(16, 784\) but the config \(784-32-10\) needs "
                                             r"\(32, 784\)"):
        build_model(config, weights)
    with pytest.raises(ModelLoadError, match="missing 4.weight"):
        build_model(RunConfig(hidden_sizes=(16, 16)), weights)
    with pytest.raises(ModelLoadError, match="784"):
        build_model(RunConfig(hidden_sizes=(16,), dataset="cifar10"), weights)  # CIFAR needs 3,072 inputs
    weights["0.weight"] = weights["0.weight"].long()
    with pytest.raises(ModelLoadError, match="float tensor"):
        build_model(RunConfig(hidden_sizes=(16,)), weights)


def test_a_run_without_weights_says_so(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = store.create_run(RunConfig().to_dict(), device="cpu", data_source="", torch_version="", parameters=0)
    with pytest.raises(ModelLoadError, match="kept no weights"):
        load_run_model(store, run_id)


def test_cifar10_colour_images_and_class_names():
    data = synthetic("cifar10", (3, 32, 32))
    config = RunConfig(dataset="cifar10", hidden_sizes=(16,), batch_size=100, epochs=3, device="cpu")
    run = TrainingRun(config, dataset=data)
    run.train_phase(3, 0.5)
    ev = evaluate_weights(config, run.trainer.model.state_dict(), dataset=data)
    assert ev.classes[0] == "airplane" and ev.classes[9] == "truck"
    assert ev.accuracy == pytest.approx(run.test_acc, abs=1e-9) and ev.accuracy > 0.2  # above chance
    assert ev.confusion.sum() == 300
    images = display_images(data, [0, 5], scale=3)
    assert images[0].shape == (96, 96, 3) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(images[1][::3, ::3], data.test_images[5].permute(1, 2, 0).numpy())


def test_grey_images_are_two_dimensional(sample):
    image = display_images(sample, [3], scale=4)[0]
    assert image.shape == (112, 112)
    np.testing.assert_array_equal(image[::4, ::4], sample.test_images[3, 0].numpy())
    assert display_images(sample, []) == []


@pytest.mark.skipif(shared_dataset_dir("MNIST") is None, reason="full MNIST not present")
def test_full_mnist_is_evaluated_on_its_official_10000_image_test_split():
    data = load_dataset("mnist", shared_dataset_dir("MNIST"), download=False, allow_sample=False)
    config = RunConfig(hidden_sizes=(8,))
    ev = evaluate_weights(config, build_mlp(config, 784, 10).state_dict(), dataset=data)
    assert ev.n == 10_000 and ev.confusion.sum() == 10_000
    assert ev.data_title == "MNIST"


@pytest.mark.skipif(shared_dataset_dir("FashionMNIST") is None, reason="FashionMNIST not present")
def test_fashion_mnist_uses_class_names():
    try:
        data = load_dataset("fashion_mnist", shared_dataset_dir("FashionMNIST"), download=False)
    except DataError as exc:
        pytest.skip(str(exc))
    config = RunConfig(dataset="fashion_mnist", hidden_sizes=(8,))
    ev = evaluate_weights(config, build_mlp(config, 784, 10).state_dict(), dataset=data)
    assert ev.n == 10_000
    assert ev.classes == CLASS_NAMES["fashion_mnist"] and "Ankle boot" in ev.classes
    assert isinstance(ev, Evaluation) and len(ev.per_class_accuracy) == 10
